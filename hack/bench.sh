#!/usr/bin/env bash
# make bench: every benchmark under tests/bench, each comparing against its baseline side
# by side in the same run (the machines are noisy: compare ratios, not absolute figures).
# Each bench starts (and stops) its own local cluster when it needs one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
status=0
for bench in trainer_bench scaling_bench operator_bench api_bench; do
  echo "=== tests/bench/$bench.py (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$PY" "tests/bench/$bench.py" || status=$?
done
exit "$status"
