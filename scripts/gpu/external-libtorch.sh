#!/usr/bin/env bash
# Source this to run a mellama built with -p:TorchBackend=cuda -p:LibTorchSource=external against the libtorch of
# a PyTorch already installed on the host (GPU clusters usually have one; TorchSharp-cuda-linux is ~2 GB from NuGet).
#
#   source scripts/gpu/external-libtorch.sh [python]     # default: $PYTHON, else python3
#
# Exports LD_LIBRARY_PATH (torch/lib first) and, when PyTorch's NCCL wheel is there, MELLAMA_NCCL_LIBRARY. Then
# checks that every libtorch symbol TorchSharp's libLibTorchSharp.so needs is present in that libtorch
# (`ldd -r`): TorchSharp 0.107 is built against libtorch 2.10, and a symbol missing in another version only fails
# when it is first called, so the check lists them up front. MELLAMA_LIBTORCHSHARP=/path/libLibTorchSharp.so
# names the library to check (default: the one next to $MELLAMA, else $MELLAMA_BENCH_DLL, else
# artifacts/mellama-cuda/mellama); the script says so when it cannot check.
_mellama_py=${1:-${PYTHON:-python3}}
_mellama_torch_lib=$("$_mellama_py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) || {
  echo "external-libtorch: $_mellama_py cannot import torch" >&2; return 2 2>/dev/null || exit 2; }
export LD_LIBRARY_PATH="$_mellama_torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "external-libtorch: libtorch $("$_mellama_py" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)') from $_mellama_torch_lib" >&2
_mellama_nccl=$("$_mellama_py" -c 'import os, nvidia.nccl as n; p=[os.path.join(d, "lib", "libnccl.so.2") for d in n.__path__]; print(next(x for x in p if os.path.exists(x)))' 2>/dev/null) || true
if [ -n "$_mellama_nccl" ] && [ -z "${MELLAMA_NCCL_LIBRARY:-}" ]; then export MELLAMA_NCCL_LIBRARY="$_mellama_nccl"; echo "external-libtorch: NCCL $_mellama_nccl" >&2; fi
_mellama_lts=${MELLAMA_LIBTORCHSHARP:-$(dirname "${MELLAMA:-${MELLAMA_BENCH_DLL:-artifacts/mellama-cuda/mellama}}")/libLibTorchSharp.so}
if [ ! -f "$_mellama_lts" ]; then
  echo "external-libtorch: symbols not checked: no $_mellama_lts (set MELLAMA or MELLAMA_LIBTORCHSHARP)" >&2
else
  _mellama_missing=$(ldd -r "$_mellama_lts" 2>&1 | grep -c 'undefined symbol' || true)
  if [ "$_mellama_missing" = 0 ]; then
    echo "external-libtorch: all libtorch symbols of $_mellama_lts resolve" >&2
  else
    echo "external-libtorch: $_mellama_missing symbols of $_mellama_lts are missing from this libtorch (calls to them abort):" >&2
    { ldd -r "$_mellama_lts" 2>&1 | grep 'undefined symbol' | sed 's/(.*//; s/^.*undefined symbol: //' | head -n 20 | c++filt >&2; } || true
  fi
fi
unset _mellama_py _mellama_torch_lib _mellama_nccl _mellama_lts _mellama_missing
