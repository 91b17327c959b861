#!/usr/bin/env bash
# End-to-end training smoke test on one GPU (what ran on an H200 on 2026-11-26, see scripts/bench/README.md):
#   1. pretrain the 134M bench shape in bf16 on synthetic data for 20 steps with a checkpoint every 10, then resume
#      from it to step 25 (the resume must be logged and the run must reach step 25);
#   2. LoRA fine-tuning (dropout 0.1, bf16) of the built-in demo model on generated instruction records;
#   3. the built-in demo (`mellama demo`: prepare, 200 steps, export, score, plot) with device auto.
# MELLAMA: the CUDA flavour of mellama (default artifacts/mellama-cuda/mellama, published here if missing, which needs
# TorchSharp-cuda-linux; or publish with -p:LibTorchSource=external and `source scripts/gpu/external-libtorch.sh`).
#
#   bash scripts/gpu/train_smoke.sh        # exit 0 when all three pass
set -euo pipefail
[[ -n "${MELLAMA:-}" ]] && MELLAMA=$(realpath -m "$MELLAMA")   # relative to where the script was called from
cd "$(dirname "$0")/../.."
if [[ -z "${MELLAMA:-}" ]]; then
  MELLAMA=$PWD/artifacts/mellama-cuda/mellama
  if [[ ! -x "$MELLAMA" ]]; then
    echo "== building the CUDA flavour of mellama into artifacts/mellama-cuda"
    dotnet publish src/MeLlama.Cli -c Release -p:TorchBackend=cuda -o artifacts/mellama-cuda -v q -nologo
  fi
fi
[[ -x "$MELLAMA" ]] || { echo "train_smoke: MELLAMA=$MELLAMA is not an executable" >&2; exit 2; }
work=$(mktemp -d /tmp/mellama-gpu-smoke-XXXXXX)
ok=0
trap '[[ $ok = 1 ]] && rm -rf "$work"' EXIT   # kept, with its logs, when a check fails
fail() { echo "FAILED: $* (logs in $work)" >&2; exit 1; }
expect() { grep -E "$1" "$2" || fail "$3"; }   # prints the matching lines

echo "== 1/3: bf16 pretraining on cuda, checkpoint, resume"
common=(--config configs/bench-100m.json --synthetic-data --run-dir "$work/run" --set precision=bf16 --set device=cuda
        --set micro_batch=8 --set seq_len=1024 --set checkpoint.interval=10)
"$MELLAMA" pretrain "${common[@]}" --set max_steps=20 > "$work/p1.log" 2>&1 || { tail -n 20 "$work/p1.log"; fail "pretrain"; }
expect "Step 20/20" "$work/p1.log" "pretrain did not reach step 20"
"$MELLAMA" pretrain "${common[@]}" --set max_steps=25 > "$work/p2.log" 2>&1 || { tail -n 20 "$work/p2.log"; fail "resumed pretrain"; }
grep -q "Resuming from .*step-00000020" "$work/p2.log" || fail "the second run did not resume from step 20"
expect "Step 25/25" "$work/p2.log" "the resumed run did not reach step 25"

echo "== 2/3: LoRA fine-tuning on cuda (dropout 0.1, bf16)"
for i in $(seq 0 199); do printf '{"instruction": "Add %d and %d.", "output": "The sum is %d."}\n' "$i" $((i + 1)) $((2 * i + 1)); done > "$work/ft.jsonl"
"$MELLAMA" finetune --config demo --data "$work/ft.jsonl" --run-dir "$work/ft" --set lora.dropout=0.1 --set precision=bf16 \
  --set device=cuda --set max_steps=30 > "$work/ft.log" 2>&1 || { tail -n 20 "$work/ft.log"; fail "finetune"; }
expect "finished 30 steps" "$work/ft.log" "finetune did not finish 30 steps"

echo "== 3/3: the built-in demo, device auto"
(cd "$work" && "$MELLAMA" demo > demo.log 2>&1) || { tail -n 20 "$work/demo.log"; fail "demo"; }
grep -q "on cuda" "$work/demo.log" || fail "the demo did not train on the GPU"
expect "held-out loss" "$work/demo.log" "the demo printed no held-out losses"
ok=1
echo "== all GPU training smoke checks passed"
