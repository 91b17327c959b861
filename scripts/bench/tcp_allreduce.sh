#!/usr/bin/env bash
# Benchmark (not a test): TCP ring all-reduce bandwidth on this machine through the real `mellama launch`
# and `mellama collectives-selftest`, for a few sizes and 2 and 3 ranks. Rank 0 prints, per size,
# the mean time of --iterations all-reduces, algbw = bytes/time and busbw = algbw * 2(n-1)/n (nccl-tests'
# convention: busbw is comparable across world sizes and to the link's bandwidth).
#
#   bash scripts/bench/tcp_allreduce.sh                 # sizes 1M,16M,64M,256M; 2 and 3 ranks
#   SIZES=4K,1M NPROCS="2" ITERATIONS=20 bash scripts/bench/tcp_allreduce.sh
#
# Loopback numbers depend on how busy the machine is: the script prints the load average and the CPU time
# (user+sys) the whole run took, so a number taken on a shared machine can be judged.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${SIZES:-1M,16M,64M,256M}
NPROCS=${NPROCS:-"2 3"}
ITERATIONS=${ITERATIONS:-10}
DTYPES=${DTYPES:-float32}
dotnet build src/MeLlama.Cli -c Release -v q -nologo >/dev/null
MELLAMA=src/MeLlama.Cli/bin/Release/net10.0/mellama
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $NPROCS; do
  echo "## $n ranks, dtypes $DTYPES, $ITERATIONS iterations after 2 warm-up"
  timing=$(mktemp)
  /usr/bin/time -o "$timing" -f "wall %e s including start-up; cpu user %U s, sys %S s (all ranks)" \
    "$MELLAMA" -q launch --nproc "$n" -- \
      collectives-selftest -q --ops all_reduce --sizes "$SIZES" --dtypes "$DTYPES" --iterations "$ITERATIONS" --warmup 2 \
    | grep -E '^\[rank 0\] (all_reduce sum|#)' | sed 's/^\[rank 0\] //'
  echo "# $(cat "$timing")"
  rm -f "$timing"
done
