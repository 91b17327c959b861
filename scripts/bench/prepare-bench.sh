#!/usr/bin/env bash
# Benchmark of `mellama prepare` (not a test): throughput (MB/s of text, tokens/s) with one thread and with all
# threads, and peak memory (max RSS from /usr/bin/time -v) on the sample corpus and on a corpus 10x as large
# (the sample repeated) and 30x, to show memory does not grow with corpus size.
#
#   scripts/bench/prepare-bench.sh [REPEAT=10]
#
# Sample = the real corpora in ../shared/data/corpus (PubMedQA JSON, ACI-Bench + MTS-Dialog CSVs), tokenized with
# the LLaMA-2 tokenizer.model from ../shared (gpt2 if absent). De-duplication is switched off in the bench config
# so the repeated copies are all written (the dedup set costs ~32 bytes per kept document, see README).
# Output: a table on stdout and raw logs under out/bench/prepare/.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEAT="${1:-10}"
SHARED="${MELLAMA_SHARED:-../shared}"
CORPUS="$SHARED/data/corpus"
WORK="out/bench/prepare"
[ -d "$CORPUS" ] || { echo "prepare-bench: $CORPUS is absent" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "prepare-bench: needs GNU time (apt-get install time)" >&2; exit 2; }
TOKENIZER="$SHARED/data/tokenizer/llama2/tokenizer.model"
[ -f "$TOKENIZER" ] || TOKENIZER=gpt2

dotnet build src/MeLlama.Cli -c Release -v q -nologo >/dev/null
MELLAMA="src/MeLlama.Cli/bin/Release/net10.0/mellama"

rm -rf "$WORK" && mkdir -p "$WORK"
ABS_WORK="$(cd "$WORK" && pwd)"
# Corpora: rep-1 = the sample once, rep-N = N copies of every file (same text N times).
make_corpus() {
  local n="$1" dir="$ABS_WORK/in-$1"
  mkdir -p "$dir/pubmedqa" "$dir/aci" "$dir/mts"
  for i in $(seq 1 "$n"); do
    ln -sf "$(cd "$CORPUS" && pwd)/pubmedqa/ori_pqal.json" "$dir/pubmedqa/copy$i.json"
    for f in "$CORPUS"/clinical-notes/aci-bench/*.csv; do case "$f" in *_metadata.csv) ;; *) ln -sf "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$dir/aci/copy$i-$(basename "$f")";; esac; done
    for f in "$CORPUS"/clinical-notes/mts-dialog/*.csv; do ln -sf "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$dir/mts/copy$i-$(basename "$f")"; done
  done
  cat > "$dir/config.json" <<JSON
{ "name": "bench-$n", "normalization": "NFC", "minChars": 32, "shardMegabytes": 16, "evalFraction": 0.01, "dedup": false,
  "sources": [
    { "name": "pubmedqa", "domain": "biomedical", "format": "json-records", "paths": ["pubmedqa/*.json"], "fields": ["CONTEXTS", "LONG_ANSWER"] },
    { "name": "aci-bench", "domain": "clinical", "format": "csv", "paths": ["aci/*.csv"], "fields": ["dialogue", "note"], "joiner": "\n\n" },
    { "name": "mts-dialog", "domain": "clinical", "format": "csv", "paths": ["mts/*.csv"], "fields": ["section_text", "dialogue"], "joiner": "\n\n" } ] }
JSON
}
make_corpus 1
make_corpus "$REPEAT"
make_corpus "$((REPEAT * 3))"

run() { # name corpus threads
  local name="$1" n="$2" threads="$3"
  /usr/bin/time -v "$MELLAMA" prepare --config "$ABS_WORK/in-$n/config.json" --out "$ABS_WORK/out-$name" \
    --tokenizer "$TOKENIZER" --threads "$threads" -q > "$ABS_WORK/$name.summary" 2> "$ABS_WORK/$name.time"
  local line rss wall user
  line=$(grep -E "tokens from .* MB of text" "$ABS_WORK/$name.summary")
  rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$ABS_WORK/$name.time")
  wall=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$ABS_WORK/$name.time")
  user=$(awk -F: '/User time/ {gsub(/ /,"",$2); print $2}' "$ABS_WORK/$name.time")
  local mb tokens secs
  mb=$(echo "$line" | sed -E 's/.* from ([0-9.]+) MB of text.*/\1/')
  tokens=$(echo "$line" | sed -E 's/^([0-9,]+) tokens.*/\1/' | tr -d ,)
  secs=$(echo "$line" | sed -E 's/.* in ([0-9.]+) s .*/\1/')
  printf "%-14s %7s %8s %12s %8s %8s %10s %12s %10s\n" "$name" "${n}x" "$threads" "$tokens" "$mb" "$secs" \
    "$(awk -v a="$mb" -v b="$secs" 'BEGIN{printf "%.2f", a/b}')" "$(awk -v a="$tokens" -v b="$secs" 'BEGIN{printf "%.0f", a/b}')" \
    "$(awk -v k="$rss" 'BEGIN{printf "%.0f", k/1024}')"
  echo "  (wall $wall, user CPU ${user}s, $(awk -v a="$mb" -v u="$user" 'BEGIN{printf "%.2f", a/u}') MB per CPU-second)"
}

ALL=$(nproc)
echo "prepare-bench on $(nproc) cores, $(uname -m), tokenizer $(basename "$TOKENIZER"), load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-14s %7s %8s %12s %8s %8s %10s %12s %10s\n" run corpus threads tokens MB seconds "MB/s" "tokens/s" "peak MiB"
run sample-t1 1 1
run sample-tall 1 "$ALL"
run repeat-tall "$REPEAT" "$ALL"
run repeat3-tall "$((REPEAT * 3))" "$ALL"
