#!/bin/sh
# Instructions per call of the pure proxy core, counted by callgrind: repeatable
# whatever else the machine is doing. The traffic of CALLS calls is recorded once,
# then replayed through a fresh proxy; the difference between a run that records
# and replays and one that only records is the proxy's own work.
#   bench/core_instructions.sh [CALLS]
set -e
cd "$(dirname "$0")/.."
calls=${1:-1000}
py=${PYTHON:-.venv/bin/python}
export PYTHONHASHSEED=0
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" -c "
import sys; sys.path.insert(0, 'bench'); import core_calls
t = core_calls.record($calls)
if $1: core_calls.replay(t)" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(count 0)
b=$(count 1)
echo "core: $(( (b - a) / calls )) instructions per call ($calls calls)"
