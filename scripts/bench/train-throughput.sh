#!/usr/bin/env bash
# Training throughput (tokens/s, MFU against the measured matmul peak) of a ~110M-parameter LLaMA shape on this
# machine. Extra arguments go to `mellama pretrain` (e.g. --set precision=bf16 --set activation_checkpointing=true).
# Prints the per-step metrics (skipping the first 2 warm-up steps) and their median.
set -euo pipefail
cd "$(dirname "$0")/../.."
dotnet build src/MeLlama.Cli -c Release -v q -nologo >/dev/null
run=$(mktemp -d /tmp/mellama-bench-XXXXXX)
dotnet src/MeLlama.Cli/bin/Release/net10.0/mellama.dll pretrain --config configs/bench-100m.json --synthetic-data \
  --run-dir "$run" --no-resume "$@" 2>&1 | grep -E "Model:|peak|Step" || true
python3 - "$run/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l][2:]
tps = statistics.median(r["tokens_per_second"] for r in rows)
mfu = statistics.median(r["mfu"] for r in rows)
mem = max(r["memory_mb"] for r in rows)
print(f"median over {len(rows)} steps: {tps:.0f} tokens/s, MFU {mfu*100:.1f}%, peak RSS {mem:.0f} MiB")
PY
rm -rf "$run"
