#!/bin/bash
# Instructions of the whole `sipfleet run` process (every thread, the adapters and
# the event loop included) for CALLS calls at RATE/s, counted by callgrind: far less
# noisy than CPU time, so two builds compare to the percent. Start-up is not
# counted (--instr-atstart=no; counting is switched on once the proxy listens).
# Uses the default ports, as bench/side_by_side.py does: 5060 (proxy), 5070/5071
# (two SIPp UAS), 5080 (SIPp UAC); nothing else may hold them.
# Dialog persistence is off unless PERSIST=1: under callgrind the process runs
# ~50x slower, so calls outlive the 0.2 s write batches they would never see at
# full speed, and SQLite writes (timing, not code) would swamp the comparison.
#   bench/process_instructions.sh [TREE] [CALLS] [RATE]   (defaults: this checkout, 200, 20)
set -u
tree=$(cd "${1:-$(dirname "$0")/..}" && pwd); calls=${2:-200}; rate=${3:-20}
work=$(mktemp -d); cd "$work"
cp "$tree/bench/uac_rr.xml" "$tree/bench/uas_rr.xml" .
printf '[store]\npersist_dialogs = %s\n' "$([ "${PERSIST:-0}" = 1 ] && echo true || echo false)" > bench.toml
sipp -sf uas_rr.xml -i 127.0.0.1 -p 5070 -nostdin -bg > /dev/null 2>&1
sipp -sf uas_rr.xml -i 127.0.0.1 -p 5071 -nostdin -bg > /dev/null 2>&1
PYTHONHASHSEED=0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
  "$tree/.venv/bin/python" "$tree/.venv/bin/sipfleet" run -c bench.toml > proxy.log 2>&1 &
vp=$!
for _ in $(seq 1 600); do ss -lun | grep -q ":5060 " && break; sleep 0.1; done
sleep 3
callgrind_control -i on $vp > /dev/null
sipp -sf uac_rr.xml 127.0.0.1:5060 -i 127.0.0.1 -p 5080 -m "$calls" -r "$rate" -nostdin -timeout 120 > /dev/null 2>&1
rc=$?
callgrind_control -i off $vp > /dev/null
callgrind_control -d $vp > /dev/null
sleep 1
kill -INT $vp; sleep 2; kill -9 $vp 2>/dev/null
pkill -f "sipp -sf uas_rr.xml -i 127.0.0.1 -p 507"
total=$(sed -n 's/^totals: //p' "$work/cg.out.1")
echo "sipfleet run ($tree): $total instructions for $calls calls at $rate/s (SIPp rc=$rc); callgrind file $work/cg.out.1"
