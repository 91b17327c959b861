#!/usr/bin/env bash
# Checks the memory planner's activation/step estimates against resident memory measured on CPU, in a test process
# that runs nothing else (RSS is process-wide, so the normal suite skips these two tests).
set -euo pipefail
cd "$(dirname "$0")/../.."
dotnet build tests/MeLlama.Training.Tests -c Release -v q -nologo >/dev/null
MELLAMA_MEMORY_TESTS=1 dotnet test tests/MeLlama.Training.Tests -c Release --no-build \
  --filter "FullyQualifiedName~PlannerMeasuredMemoryTests" --logger "console;verbosity=detailed" | grep -E "ratio|Passed|Failed"
