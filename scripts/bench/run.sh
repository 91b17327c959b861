#!/usr/bin/env bash
# MeLlama against what users would pick instead, side by side, one command, same machine:
#   1. training step (forward + backward + AdamW): MeLlama vs PyTorch eager (Debian python3-torch), tokens/s + MFU
#      against the fp32 matmul peak measured in each process;
#   2. tokenization: MeLlama's LLaMA tokenizer vs the SentencePiece library on PubMedQA abstracts, plus
#      `prepare` end to end (skipped when ../shared is absent);
#   3. checkpoint save/load (HF export and the trainer's checkpoint) vs the disk's dd sequential write/read;
#   4. generate tokens/s through `mellama generate --benchmark` vs a PyTorch KV-cache greedy decode (skipped where
#      the generate command is absent).
# Writes scripts/bench/results/<date>-<host>-<shape>[-<parts>][-N].json and .md and prints the Markdown table.
#
# usage: scripts/bench/run.sh [--shape 130m|small|tiny] [--steps N] [--warmup N] [--quick] [--only train,tokenize,checkpoint]
#                             [--threads N] [--no-install] [--repeats N] [--phases] [--omp-passive]
#   --repeats N: disk and checkpoint measurements are the best of N (default 3).
#   MELLAMA_BENCH_DLL=/path/MeLlamaBench.dll (+ DOTNET=/path/dotnet): use a MeLlamaBench built elsewhere.
#   --quick: small shape, fewer steps, smaller disk test (a couple of minutes on 2 cores).
#   --omp-passive: OMP_WAIT_POLICY=PASSIVE for both implementations. On a machine shared with other busy processes,
#     OpenMP threads spinning at barriers while their partner is descheduled can make multi-threaded steps several
#     times slower; passive waiting avoids that (on a quiet machine the default spinning is as fast or faster).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"

SHAPE=130m STEPS=5 WARMUP=2 ONLY=train,tokenize,checkpoint,generate THREADS=0 INSTALL=1 PHASES=0 DISK_MB=1024 SECONDS_TOK=3 REPEATS=3
ARGS_GIVEN="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --phases) PHASES=1; shift ;;
    --omp-passive) export OMP_WAIT_POLICY=PASSIVE; shift ;;
    --quick) SHAPE=small; STEPS=3; WARMUP=1; DISK_MB=256; SECONDS_TOK=1; REPEATS=2; shift ;;
    -h|--help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

# Shapes: the one table both implementations read (hidden layers heads ffn vocab batch seq).
case "$SHAPE" in
  130m)  read -r D L H FF V B T <<< "768 12 12 2048 32000 4 256" ;;
  small) read -r D L H FF V B T <<< "256 4 8 688 32000 4 128" ;;
  tiny)  read -r D L H FF V B T <<< "64 2 4 176 512 2 32" ;;
  *) echo "run.sh: --shape must be 130m, small or tiny" >&2; exit 2 ;;
esac
SHAPE_ARGS=(--shape "$SHAPE" --hidden "$D" --layers "$L" --heads "$H" --ffn "$FF" --vocab "$V" --batch "$B" --seq "$T")
NTHREADS=$([ "$THREADS" -gt 0 ] && echo "$THREADS" || nproc)

PY=/usr/bin/python3   # Debian's python, where apt installs torch and sentencepiece (not a pyenv/venv python on PATH)
SHARED="${MELLAMA_SHARED:-$ROOT/../shared}"
STAMP=$(date +%Y-%m-%d-%H%M%S)
HOST=$(hostname -s 2>/dev/null || hostname)
RESULTS="$ROOT/scripts/bench/results"
WORK="$ROOT/scripts/bench/.work"          # scratch (checkpoints, dd files, shards); removed at the end
PARTS="$WORK/parts-$STAMP"
mkdir -p "$RESULTS" "$PARTS"
trap 'rm -rf "$WORK/ckpt" "$WORK/prepare" "$WORK/dd.bin" "$WORK/genmodel"' EXIT
SKIPPED="$PARTS/.skipped"; : > "$SKIPPED"
skip() { echo "run.sh: skipping $1: $2" >&2; printf '%s\t%s\n' "$1" "$2" >> "$SKIPPED"; }
LOADS="$PARTS/.loads"; : > "$LOADS"
mark_load() { printf '%s\t%s\n' "$1" "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$LOADS"; echo "== $1 (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- reference packages (Debian apt): python3-torch, python3-sentencepiece -----------------------------------
# Debian's torch calls the generic libblas.so.3: without an optimized provider that is netlib's reference BLAS
# (about 1 GFLOP/s), so OpenBLAS (OpenMP build, which follows torch.set_num_threads) is part of the reference.
OPENBLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
need_pkgs=()
$PY -c 'import torch' 2>/dev/null || need_pkgs+=(python3-torch)
[ -e "$OPENBLAS_DIR/libblas.so.3" ] || need_pkgs+=(libopenblas0-openmp)
$PY -c 'import sentencepiece' 2>/dev/null || need_pkgs+=(python3-sentencepiece)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$INSTALL" = 1 ]; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo "sudo -n")
    echo "run.sh: installing ${need_pkgs[*]} with apt-get" >&2
    $SUDO apt-get install -y "${need_pkgs[@]}" >&2 || echo "run.sh: apt-get install failed; the references that need it are skipped" >&2
  fi
fi
HAVE_TORCH=0; $PY -c 'import torch' 2>/dev/null && HAVE_TORCH=1
HAVE_SPM=0; $PY -c 'import sentencepiece' 2>/dev/null && HAVE_SPM=1

# --- build MeLlama's side ------------------------------------------------------------------------------------
if [ -n "${MELLAMA_BENCH_DLL:-}" ]; then   # built elsewhere (a host without the .NET SDK; see gpu.sh)
  BENCH=("${DOTNET:-dotnet}" "$MELLAMA_BENCH_DLL")
else
  echo "run.sh: building scripts/bench/MeLlamaBench (Release)" >&2
  dotnet build scripts/bench/MeLlamaBench -c Release -v q -nologo >&2
  BENCH=(dotnet "$ROOT/scripts/bench/MeLlamaBench/bin/Release/net10.0/MeLlamaBench.dll")
fi
THREAD_ARG=(); [ "$THREADS" -gt 0 ] && THREAD_ARG=(--threads "$THREADS")

# --- 1. training step ----------------------------------------------------------------------------------------
if wants train; then
  PHASE_ARG=(); [ "$PHASES" = 1 ] && PHASE_ARG=(--phases)
  mark_load train_mellama
  "${BENCH[@]}" train "${SHAPE_ARGS[@]}" --steps "$STEPS" --warmup "$WARMUP" "${THREAD_ARG[@]}" "${PHASE_ARG[@]}" --out "$PARTS/train_mellama.json"
  if [ "$HAVE_TORCH" = 1 ]; then
    mark_load train_torch
    # The reference loads OpenBLAS whatever the machine-wide libblas.so.3 alternative points to.
    LD_LIBRARY_PATH="$OPENBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      $PY scripts/bench/torch_step.py "${SHAPE_ARGS[@]}" --steps "$STEPS" --warmup "$WARMUP" --threads "$NTHREADS" --out "$PARTS/train_torch.json"
  else
    skip "PyTorch training step" "python3-torch is not importable by $PY"
  fi
fi

# --- 2. tokenization and prepare -----------------------------------------------------------------------------
if wants tokenize; then
  TOK="$SHARED/data/tokenizer/llama2/tokenizer.model"; CORPUS="$SHARED/data/corpus/pubmedqa/ori_pqal.json"
  if [ -f "$TOK" ] && [ -f "$CORPUS" ]; then
    mark_load tokenize_mellama
    "${BENCH[@]}" tokenize --tokenizer "$TOK" --corpus "$CORPUS" --seconds "$SECONDS_TOK" --threads "$NTHREADS" --out "$PARTS/tokenize_mellama.json"
    if [ "$HAVE_SPM" = 1 ]; then
      mark_load tokenize_spm
      $PY scripts/bench/spm_tokenize.py --tokenizer "$TOK" --corpus "$CORPUS" --seconds "$SECONDS_TOK" --threads "$NTHREADS" --out "$PARTS/tokenize_spm.json"
    else
      skip "SentencePiece reference" "python3-sentencepiece is not importable by $PY"
    fi
    mark_load prepare_mellama
    "${BENCH[@]}" prepare --tokenizer "$TOK" --corpus "$CORPUS" --work "$WORK/prepare" --threads "$NTHREADS" --out "$PARTS/prepare_mellama.json"
  else
    skip tokenize "the shared data folder ($SHARED) with the LLaMA-2 tokenizer and PubMedQA is absent (set MELLAMA_SHARED)"
  fi
fi

# --- 3. disk and checkpoints ---------------------------------------------------------------------------------
if wants checkpoint; then
  mkdir -p "$WORK/ckpt"
  mark_load disk
  $PY - "$WORK/dd.bin" "$DISK_MB" "$REPEATS" > "$PARTS/disk.json" <<'PYEOF'
import json, re, subprocess, sys
path, mb, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def dd(*args):
    # GNU dd prints "N bytes (...) copied, S s, R unit/s" on stderr; bytes / seconds is computed here.
    err = subprocess.run(["dd", *args], capture_output=True, text=True, check=True).stderr
    m = re.search(r"^(\d+) bytes.*copied, ([0-9.e+-]+) s", err, re.M)
    return int(m.group(1)) / float(m.group(2)) / 1e9
w, r, rd = [], [], []
for _ in range(repeats):
    w.append(dd("if=/dev/zero", f"of={path}", "bs=16M", f"count={mb // 16}", "conv=fdatasync"))
    subprocess.run(["dd", f"if={path}", "iflag=nocache", "count=0", "status=none"], check=True)   # drop it from the page cache
    r.append(dd(f"if={path}", "of=/dev/null", "bs=16M"))
    rd.append(dd(f"if={path}", "of=/dev/null", "bs=16M", "iflag=direct"))
import os; os.remove(path)
print(json.dumps({"path": os.path.dirname(path), "file_mb": mb, "repeats": repeats, "write_gb_per_s": max(w), "read_gb_per_s": max(r),
                  "read_direct_gb_per_s": max(rd), "write_all": w, "read_all": r, "read_direct_all": rd}, indent=2))
PYEOF
  mark_load checkpoint
  "${BENCH[@]}" checkpoint "${SHAPE_ARGS[@]}" --work "$WORK/ckpt" --repeats "$REPEATS" --out "$PARTS/checkpoint.json"
fi

# --- 4. generate ---------------------------------------------------------------------------------------------
# Through the CLI (`mellama generate --benchmark`), so this script needs no compile-time link to the generation code:
# measured where the command exists, skipped with a message where it does not.
if wants generate; then
  if [ -f src/MeLlama.Cli/Commands/GenerateCommand.cs ]; then
    echo "run.sh: building src/MeLlama.Cli (Release) for mellama generate" >&2
    dotnet build src/MeLlama.Cli -c Release -v q -nologo >&2
    GEN_TOK="$SHARED/data/tokenizer/llama2/tokenizer.model"; [ -f "$GEN_TOK" ] || GEN_TOK=gpt2
    rm -rf "$WORK/genmodel"
    "${BENCH[@]}" hf-model "${SHAPE_ARGS[@]}" --tokenizer "$GEN_TOK" --model-out "$WORK/genmodel" --out "$PARTS/.genmodel.json"
    NEW_TOKENS=64
    PROMPT="A 54-year-old patient presents with chest pain radiating to the left arm, shortness of breath and sweating. What is the most likely diagnosis and what should be done first?"
    mark_load generate_mellama
    dotnet src/MeLlama.Cli/bin/Release/net10.0/mellama.dll generate --model "$WORK/genmodel" --prompt "$PROMPT" --max-new-tokens "$NEW_TOKENS" \
      --benchmark --ignore-eos --device cpu --dtype fp32 --threads "$NTHREADS" > "$WORK/generate.txt"
    cat "$WORK/generate.txt" >&2
    $PY - "$WORK/generate.txt" "$PARTS/.genmodel.json" > "$PARTS/generate_mellama.json" <<'PYEOF'
import json, re, sys
text, model = open(sys.argv[1]).read(), json.load(open(sys.argv[2]))
prompt = int(re.search(r"prompt (\d+) tokens", text).group(1))
row = re.search(r"^on\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)", text, re.M)
tokens, seconds, tps, prefill = int(row.group(1)), float(row.group(2)), float(row.group(3)), float(row.group(4))
print(json.dumps({"impl": "mellama generate --benchmark (KV cache, greedy)", "prompt_tokens": prompt, "new_tokens": tokens,
                  "seconds": seconds, "prefill_seconds": prefill, "tokens_per_second": tps,
                  "decode_tokens_per_second": tokens / max(1e-9, seconds - prefill), "vocab": model["shape"]["vocab"], "raw": text}, indent=2))
PYEOF
    if [ "$HAVE_TORCH" = 1 ]; then
      GEN_PROMPT=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_tokens"])' "$PARTS/generate_mellama.json")
      GEN_VOCAB=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab"])' "$PARTS/generate_mellama.json")
      mark_load generate_torch
      LD_LIBRARY_PATH="$OPENBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        $PY scripts/bench/torch_generate.py --hidden "$D" --layers "$L" --heads "$H" --ffn "$FF" --vocab "$GEN_VOCAB" \
          --prompt-tokens "$GEN_PROMPT" --new-tokens "$NEW_TOKENS" --threads "$NTHREADS" --out "$PARTS/generate_torch.json"
    fi
    rm -rf "$WORK/genmodel"
  else
    skip generate "no generate API on this branch yet (src/MeLlama.Cli/Commands/GenerateCommand.cs, from the gen branch, is absent); nothing is measured"
  fi
fi

# --- machine description, then the report ---------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
$PY - "$PARTS" "$LOAD_START" "$LOAD_END" "$0 $ARGS_GIVEN" "$HAVE_TORCH" <<'PYEOF'
import json, os, platform, subprocess, sys, datetime
parts, load_start, load_end, command, have_torch = sys.argv[1:6]
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception: return "?"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 2**20
osname = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME")), "?")
machine = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(), "cpu_model": cpu,
    "cores": os.cpu_count(), "memory_gib": round(mem, 1), "os": osname, "kernel": platform.release(),
    "gpu": sh("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1") or "none",
    "dotnet": sh("${DOTNET:-dotnet} --version") or sh("${DOTNET:-dotnet} --list-runtimes | grep NETCore | tail -1"), "git": sh("git rev-parse --short HEAD") + (" (dirty)" if sh("git status --porcelain --untracked-files=no") else ""),
    "python": platform.python_version(),
    "torch": sh("/usr/bin/python3 -c 'import torch; print(torch.__version__)'") if have_torch == "1" else None,
    "load_start": load_start, "load_end": load_end, "command": command,
    "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "MKL_", "OPENBLAS_"))},
    "load_before": dict(l.rstrip("\n").split("\t") for l in open(os.path.join(parts, ".loads")) if "\t" in l),
}
json.dump(machine, open(os.path.join(parts, "machine.json"), "w"), indent=2)
skipped = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(parts, ".skipped")) if "\t" in l)
json.dump(skipped, open(os.path.join(parts, "skipped.json"), "w"), indent=2)
PYEOF
BASE="$RESULTS/$(date +%Y-%m-%d)-$HOST-$SHAPE"
# A partial run (--only) names its parts, so it never replaces the day's full results.
[ "$ONLY" = "train,tokenize,checkpoint,generate" ] || BASE="$BASE-${ONLY//,/-}"
# Never overwrite an earlier result of the same day: number the next one.
if [ -e "$BASE.json" ]; then n=2; while [ -e "$BASE-$n.json" ]; do n=$((n + 1)); done; BASE="$BASE-$n"; fi
$PY scripts/bench/report.py "$PARTS" "$BASE.json" "$BASE.md"
echo "run.sh: wrote $BASE.json and $BASE.md" >&2
