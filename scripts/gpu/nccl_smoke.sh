#!/usr/bin/env bash
# NCCL backend smoke test, for a machine with NVIDIA GPUs (it cannot run on the CPU-only CI machines).
# Checks, in order:
#   1. one rank on GPU 0 through a one-rank NCCL communicator: libnccl loads, the 128-byte id crosses the
#      P/Invoke boundary, device pointers of CUDA tensors (incl. bf16) are right, completion polling works;
#   2. all local GPUs, one rank each, via `mellama launch`: every collective checked on known data, with
#      bus bandwidths (compare with nccl-tests' all_reduce_perf on the same machine);
#   3. failure handling: one rank crashes mid-run, the others must exit non-zero naming it, quickly.
# Needs: the NVIDIA driver (libcuda.so.1), NCCL 2.x as libnccl.so.2 on the loader path (apt package libnccl2,
# or pip's nvidia-nccl-cu12: MELLAMA_NCCL_LIBRARY=.../site-packages/nvidia/nccl/lib/libnccl.so.2), and a CUDA
# build of mellama (built here if missing; that needs the TorchSharp-cuda-linux package from NuGet; or publish with
# -p:LibTorchSource=external, set MELLAMA, and `source scripts/gpu/external-libtorch.sh` to use the host's PyTorch).
# Ran on an H200 on 2026-11-26 (one GPU: check 1 only): every collective and dtype passed.
#
#   bash scripts/gpu/nccl_smoke.sh            # exit 0 when all checks pass
set -euo pipefail
cd "$(dirname "$0")/../.."
MELLAMA=${MELLAMA:-artifacts/mellama-cuda/mellama}
if [[ ! -x "$MELLAMA" ]]; then
  echo "== building the CUDA flavour of mellama into artifacts/mellama-cuda"
  dotnet publish src/MeLlama.Cli -c Release -p:TorchBackend=cuda -o artifacts/mellama-cuda -v q -nologo
fi
nvidia-smi -L
ngpu=$(nvidia-smi -L | grep -c '^GPU')
if [[ -z "${MELLAMA_NCCL_LIBRARY:-}" ]] && ! ldconfig -p | grep -q 'libnccl.so.2'; then
  echo "libnccl.so.2 is not on the loader path; set MELLAMA_NCCL_LIBRARY to it" >&2
  exit 2
fi
export MELLAMA_COLLECTIVE_TIMEOUT_S=${MELLAMA_COLLECTIVE_TIMEOUT_S:-120}

echo "== 1/3: one rank, NCCL communicator of size 1 on GPU 0"
"$MELLAMA" collectives-selftest --device cuda --backend nccl --sizes 4K,1M,64M --dtypes float32,bfloat16,int64 --iterations 5

if (( ngpu < 2 )); then
  echo "== only $ngpu GPU: multi-rank checks skipped (NCCL needs one GPU per rank)"
  exit 0
fi

echo "== 2/3: $ngpu ranks, one per GPU"
"$MELLAMA" launch --nproc "$ngpu" -- collectives-selftest --device cuda --sizes 1M,64M,512M --dtypes bfloat16,float32 --iterations 10

echo "== 3/3: rank 1 crashes; the others must stop within seconds and name it"
log=$(mktemp)
start=$(date +%s)
set +e
"$MELLAMA" launch --nproc "$ngpu" --stop-grace-s 20 -- collectives-selftest --device cuda --sizes 64M --dtypes bfloat16 \
  --loops 0 --fail-rank 1 --timeout-s 300 >"$log" 2>&1
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
grep -E 'failed|aborted|rank 1' "$log" | tail -n 8
rm -f "$log"
if [[ $rc -ne 3 || $elapsed -gt 120 ]]; then
  echo "FAILED: expected exit 3 within 120 s, got $rc after ${elapsed}s" >&2
  exit 1
fi
echo "== all NCCL smoke checks passed (crash detected in ${elapsed}s)"
