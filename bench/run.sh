#!/usr/bin/env bash
# `make bench`: runs every bench/<name>/run.sh in turn (each writes bench/results/<name>.md),
# then assembles docs/benchmarks.md from those sections. Benchmarks never run in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
only="${BENCH_ONLY:-}"
for dir in bench/*/; do
  name="$(basename "$dir")"
  [ "$name" = results ] && continue
  [ -x "$dir/run.sh" ] || continue
  if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then continue; fi
  echo "=== bench: $name"
  "$dir/run.sh"
done
{
  echo "# Benchmarks"
  echo
  echo "Measured on this project's machine kind (2 cores, 24 GB) with \`make bench\`"
  echo "(one section per \`bench/<name>/run.sh\`; \`BENCH_ONLY=\"ingress query\" make bench\` reruns some)."
  echo "Every figure below was measured in the run that wrote it; baselines ran in the same run."
  echo
  for f in bench/results/*.md; do [ -f "$f" ] && { cat "$f"; echo; }; done
} > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
