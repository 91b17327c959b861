#!/usr/bin/env bash
# Benchmark (not a test): FSDP (full shard) step time with 2 ranks vs 1 rank on CPU, and the share of the step
# spent inside collectives. Each rank is a separate process (MeLlamaBench fsdp) talking TCP over localhost through
# the real rendezvous store and ring collectives; every collective call is timed by TimedCollectives.
# Same global batch in every row (GMB micro-batches of the shape's batch × seq, split over the ranks).
#
#   bash scripts/bench/fsdp-scaling.sh                    # shape small, 4 timed steps after 1 warm-up
#   SHAPE=tiny STEPS=3 bash scripts/bench/fsdp-scaling.sh # harness smoke run
#   EXTRA="--vocab 8000" bash scripts/bench/fsdp-scaling.sh
#
# Rows: 1 rank × 1 thread, 1 rank × 2 threads (all of a 2-core machine), 2 ranks × 1 thread each.
# On a shared machine wall times depend on the load: the load average is printed before and after.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHAPE=${SHAPE:-small}
STEPS=${STEPS:-4}
WARMUP=${WARMUP:-1}
GMB=${GMB:-2}
EXTRA=${EXTRA:-}
dotnet build scripts/bench/MeLlamaBench -c Release -v q -nologo >/dev/null
BENCH="dotnet scripts/bench/MeLlamaBench/bin/Release/net10.0/MeLlamaBench.dll"
out=$(mktemp -d /tmp/mellama-fsdp-bench-XXXXXX)
trap 'rm -rf "$out"' EXIT
echo "# $(date -u +%FT%TZ) $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
common=(fsdp --shape "$SHAPE" --steps "$STEPS" --warmup "$WARMUP" --global-micro-batches "$GMB")
# shellcheck disable=SC2206
common+=($EXTRA)

run_world() { # $1 ranks, $2 threads per rank, $3 label
  local n=$1 threads=$2 label=$3 pids=() port secret
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  for ((r = 0; r < n; r++)); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port MELLAMA_JOB_SECRET=$secret \
      $BENCH "${common[@]}" --threads "$threads" --out "$out/$label-rank$r.json" 2>"$out/$label-rank$r.log" &
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  if [ "$failed" -ne 0 ]; then tail -n 20 "$out/$label"-rank*.log >&2; echo "run $label failed" >&2; exit 1; fi
}

if [ "${WORLD_ONLY:-}" = "" ]; then
  run_world 1 1 r1t1
  run_world 1 2 r1t2
fi
run_world 2 1 r2t1
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
def load(label):
    files = sorted(glob.glob(os.path.join(out, f"{label}-rank*.json")))
    return [json.load(open(f)) for f in files]
rows = [(l, load(l)) for l in ("r1t1", "r1t2", "r2t1")]
rows = [(l, r) for l, r in rows if r]
s = rows[0][1][0]["shape"]
print(f"shape {s['name']}: d={s['hidden']}, {s['layers']} layers, {s['heads']} heads, ffn {s['ffn']}, vocab {s['vocab']}, "
      f"{s['parameters']/1e6:.1f}M params; global batch {rows[0][1][0]['global_micro_batches']}×{s['batch']}×{s['seq']} "
      f"= {rows[0][1][0]['global_tokens_per_step']} tokens/step; fp32, FsdpTrainStep (full shard, unit checkpointing); "
      f"median of {rows[0][1][0]['steps']} steps")
print()
print("| ranks × threads | step time (s) | tokens/s | in collectives (s/step) | share in collectives | CPU s/step per rank | speed-up vs 1×1 |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
base = rows[0][1][0]["step_seconds_median"]
for label, ranks in rows:
    r0 = ranks[0]
    step = max(r["step_seconds_median"] for r in ranks)
    comm = sum(r["collective_seconds_median"] for r in ranks) / len(ranks)
    share = sum(r["collective_share"] for r in ranks) / len(ranks)
    cpu = "/".join(f"{r['cpu_seconds_per_step_median']:.2f}" for r in ranks)
    print(f"| {r0['world_size']} × {r0['threads_per_rank']} | {step:.2f} | {r0['global_tokens_per_step']/step:.0f} | {comm:.2f} | "
          f"{share*100:.0f}% | {cpu} | {base/step:.2f} |")
last = [r for l, rs in rows if l == "r2t1" for r in rs]
if last:
    print()
    print("2-rank collectives of the last step (rank 0): " + ", ".join(
        f"{o['op']} {o['calls']}× {o['bytes']/2**20:.0f} MiB {o['seconds']:.2f}s" for o in last[0]["collective_ops_last_step"]))
    l1 = rows[0][1][0]["losses"]; l2 = last[0]["losses"]
    print("losses 1 rank: " + ", ".join(f"{x:.5f}" for x in l1) + "; 2 ranks: " + ", ".join(f"{x:.5f}" for x in l2))
PY
