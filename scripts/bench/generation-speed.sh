#!/usr/bin/env bash
# Generation speed (tokens/s) of the demo model with and without the KV cache, through `mellama generate --benchmark`.
# The demo model (the pretraining demo's architecture: d=128, 4 layers, GQA 4/2, tied gpt2 embeddings, context 256) is made
# by a 1-step `mellama finetune --config demo` on a tiny instruction file and exported; its weights do not matter for speed.
# Usage: scripts/bench/generation-speed.sh [THREADS [NEW_TOKENS]]   (defaults: 1 thread, 192 new tokens)
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-1}
new_tokens=${2:-192}
dotnet build src/MeLlama.Cli -c Release -v q -nologo >/dev/null
mellama="dotnet src/MeLlama.Cli/bin/Release/net10.0/mellama.dll"
work=$(mktemp -d /tmp/mellama-genbench-XXXXXX)
trap 'rm -rf "$work"' EXIT
for i in 1 2 3 4; do
  echo "{\"instruction\": \"Is blood pressure $((110 + i * 10)) mmHg systolic high?\", \"output\": \"Borderline, recheck in $i weeks.\"}"
done > "$work/data.jsonl"
$mellama finetune --config demo --data "$work/data.jsonl" --run-dir "$work/run" --set max_steps=1 --set eval.interval=0 \
  --set tensorboard=false --set threads="$threads" -q
$mellama export --checkpoint "$work/run" --out "$work/model" --dtype fp32 -q >/dev/null
prompt="Context: Hypertension is a major risk factor for stroke, myocardial infarction and chronic kidney disease. Question: Should a 60-year-old with a blood pressure of 150/95 mmHg start treatment?"
$mellama generate --model "$work/model" --threads "$threads" --max-new-tokens "$new_tokens" --prompt "$prompt" --benchmark -q
