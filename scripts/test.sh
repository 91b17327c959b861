#!/usr/bin/env bash
# Runs the whole test suite. Tests that need ../shared (tokenizer, corpora, tiny checkpoints) skip with
# a reason when it is absent. Extra arguments go to `dotnet test` (e.g. --filter FullyQualifiedName~Data).
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build MeLlama.sln -c Release -v q -nologo
dotnet test MeLlama.sln -c Release --no-build -nologo --logger "console;verbosity=normal" "$@"
