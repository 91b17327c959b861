#!/usr/bin/env bash
# Runs the whole test suite. Tests that need ../shared (tokenizer, corpora, tiny checkpoints) skip with
# a reason when it is absent. Extra arguments go to `dotnet test` (e.g. --filter FullyQualifiedName~Data).
set -uo pipefail
cd "$(dirname "$0")/.."
results=artifacts/test-results
rm -rf "$results"
dotnet build MeLlama.sln -c Release -v q -nologo || exit 1
dotnet test MeLlama.sln -c Release --no-build -nologo \
  --logger "console;verbosity=minimal" --logger trx --results-directory "$results" "$@"
status=$?
# One closing line over all test projects: "N passed, N failed, N skipped".
passed=0; failed=0; total=0
for f in "$results"/*.trx; do
  [ -f "$f" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$f" | head -1)
  get() { echo "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  total=$((total + $(get total))); passed=$((passed + $(get passed))); failed=$((failed + $(get failed)))
done
echo "tests: $passed passed, $failed failed, $((total - passed - failed)) skipped"
exit $status
