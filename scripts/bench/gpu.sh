#!/usr/bin/env bash
# The training-step benchmark of run.sh on one GPU in bf16: MeLlama (MeLlamaBench built with
# -p:TorchBackend=cuda: bf16 weights, fp32 master weights + AdamW, SDPA is_causal) and, when the python given by
# $PYTHON imports a CUDA-enabled torch, the PyTorch eager reference (fp32 weights under bf16 autocast, the usual
# PyTorch recipe, fused AdamW where that torch has it). MFU is against the bf16 matmul peak each process measures
# (8192² matmul). Writes scripts/bench/results/<date>-<host>-gpu-<shape>.json/.md like run.sh.
#
# usage: scripts/bench/gpu.sh [--shape 130m|small|tiny|13b-layers] [--batch B] [--seq T] [--steps N] [--warmup N] [--cpu-smoke]
#   default batch 16×1024 for the 130m shape (a GPU needs more work per step than run.sh's 4×256); 13b-layers (the issue's
#   MFU target: LLaMA-2 13B layers d=5120, 40 heads, SwiGLU 13824, × 4 layers, vocab 32000) defaults to 4×2048.
#   --cpu-smoke: no GPU here; run the same commands on the CPU in bf16 with the tiny shape (checks the script and
#   the bf16 code paths, measures nothing meaningful).
#   MELLAMA_BENCH_DLL=/path/MeLlamaBench.dll: use a MeLlamaBench built elsewhere (a GPU host without the .NET SDK:
#   publish it with -p:TorchBackend=cuda -p:LibTorchSource=external and source scripts/gpu/external-libtorch.sh).
set -euo pipefail
[ -n "${MELLAMA_BENCH_DLL:-}" ] && MELLAMA_BENCH_DLL=$(realpath -m "$MELLAMA_BENCH_DLL")   # relative to the caller
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
SHAPE=130m BATCH= SEQ= STEPS=10 WARMUP=3 SMOKE=0
ARGS_GIVEN="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) SHAPE=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --seq) SEQ=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --cpu-smoke) SMOKE=1; shift ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$SHAPE" in
  130m)  read -r D L H FF V <<< "768 12 12 2048 32000" ;;
  13b-layers) read -r D L H FF V <<< "5120 4 40 13824 32000"; BATCH_DEFAULT=4; SEQ_DEFAULT=2048 ;;
  small) read -r D L H FF V <<< "256 4 8 688 32000" ;;
  tiny)  read -r D L H FF V <<< "64 2 4 176 512" ;;
  *) echo "gpu.sh: --shape must be 130m, small, tiny or 13b-layers" >&2; exit 2 ;;
esac
BATCH=${BATCH:-${BATCH_DEFAULT:-16}} SEQ=${SEQ:-${SEQ_DEFAULT:-1024}}
PYTHON="${PYTHON:-python3}"

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu; BACKEND=cpu; SHAPE=tiny; read -r D L H FF V <<< "64 2 4 176 512"; BATCH=2; SEQ=32; STEPS=2; WARMUP=1; PEAK=512
  [ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3
else
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: no NVIDIA GPU visible (nvidia-smi); nothing to measure. Use run.sh for the CPU, or --cpu-smoke to check this script." >&2
    exit 1
  fi
  DEVICE=cuda; BACKEND=cuda; PEAK=8192
fi
SHAPE_ARGS=(--shape "$SHAPE" --hidden "$D" --layers "$L" --heads "$H" --ffn "$FF" --vocab "$V" --batch "$BATCH" --seq "$SEQ")

# A separate configuration keeps the CUDA build (libtorch-cuda natives) apart from run.sh's CPU build.
if [ -n "${MELLAMA_BENCH_DLL:-}" ]; then
  BENCH=("${DOTNET:-dotnet}" "$MELLAMA_BENCH_DLL")
else
  CONFIG=Release; [ "$BACKEND" = cuda ] && CONFIG=ReleaseCuda
  echo "gpu.sh: building MeLlamaBench (-c $CONFIG -p:TorchBackend=$BACKEND)" >&2
  dotnet build scripts/bench/MeLlamaBench -c "$CONFIG" -p:Optimize=true -p:TorchBackend="$BACKEND" -v q -nologo >&2
  BENCH=(dotnet "$ROOT/scripts/bench/MeLlamaBench/bin/$CONFIG/net10.0/MeLlamaBench.dll")
fi

STAMP=$(date +%Y-%m-%d-%H%M%S)
HOST=$(hostname -s 2>/dev/null || hostname)
PARTS="$ROOT/scripts/bench/.work/gpu-parts-$STAMP"
RESULTS="$ROOT/scripts/bench/results"
mkdir -p "$PARTS" "$RESULTS"
: > "$PARTS/.loads"; : > "$PARTS/.skipped"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

printf 'train_mellama\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$PARTS/.loads"
"${BENCH[@]}" train "${SHAPE_ARGS[@]}" --device "$DEVICE" --dtype bf16 --steps "$STEPS" --warmup "$WARMUP" --peak-size "$PEAK" --out "$PARTS/train_mellama.json"

if [ "$DEVICE" = cpu ] || $PYTHON -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  printf 'train_torch\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$PARTS/.loads"
  $PYTHON scripts/bench/torch_step.py "${SHAPE_ARGS[@]}" --device "$DEVICE" --dtype bf16 --steps "$STEPS" --warmup "$WARMUP" --peak-size "$PEAK" --out "$PARTS/train_torch.json"
else
  printf 'PyTorch on the GPU\t%s\n' "$PYTHON does not import a CUDA-enabled torch (set PYTHON=/path/to/python with torch+CUDA)" >> "$PARTS/.skipped"
fi

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/env python3 - "$PARTS" "$LOAD_START" "$LOAD_END" "$0 $ARGS_GIVEN" <<'PYEOF'
import json, os, platform, subprocess, sys, datetime
parts, load_start, load_end, command = sys.argv[1:5]
def sh(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception: return "?"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0) / 2**20
osname = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME")), "?")
machine = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(), "cpu_model": cpu,
           "cores": os.cpu_count(), "memory_gib": round(mem, 1), "os": osname, "kernel": platform.release(),
           "gpu": sh("nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1") or "none",
           "dotnet": sh("${DOTNET:-dotnet} --list-runtimes | grep NETCore | tail -1"), "git": sh("git describe --always --dirty 2>/dev/null") or os.environ.get("MELLAMA_GIT", "?"), "load_start": load_start, "load_end": load_end,
           "command": command, "load_before": dict(l.rstrip("\n").split("\t") for l in open(os.path.join(parts, ".loads")) if "\t" in l)}
json.dump(machine, open(os.path.join(parts, "machine.json"), "w"), indent=2)
skipped = dict(l.rstrip("\n").split("\t", 1) for l in open(os.path.join(parts, ".skipped")) if "\t" in l)
json.dump(skipped, open(os.path.join(parts, "skipped.json"), "w"), indent=2)
PYEOF
SUFFIX=gpu; [ "$SMOKE" = 1 ] && SUFFIX=cpu-smoke
BASE="$RESULTS/$(date +%Y-%m-%d)-$HOST-$SUFFIX-$SHAPE"
/usr/bin/env python3 scripts/bench/report.py "$PARTS" "$BASE.json" "$BASE.md"
echo "gpu.sh: wrote $BASE.json and $BASE.md" >&2
