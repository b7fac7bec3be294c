#!/bin/sh
# Instructions per call of the pure proxy core (plus the replay harness), counted
# by callgrind: repeatable whatever else the machine is doing. Two runs, so the
# interpreter's start-up cancels out.
#   bench/core_instructions.sh [CALLS]
set -e
cd "$(dirname "$0")/.."
calls=${1:-1000}
py=${PYTHON:-.venv/bin/python}
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" -c "
import gc, sys; sys.path.insert(0, 'bench'); import core_calls; gc.disable(); core_calls.run($1)" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(count 100)
b=$(count $((calls + 100)))
echo "core: $(( (b - a) / calls )) instructions per call"
