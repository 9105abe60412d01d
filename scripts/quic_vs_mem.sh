#!/bin/bash
# Issue 18: QUIC against memory, two binaries interleaved, 3 rounds (one JSON line per run on stdout).
# Usage: scripts/quic_vs_mem.sh OLD_BINARY NEW_BINARY > out.jsonl   (run from the repository root; needs models/all-minilm-l6-v2)
set -euo pipefail
for i in 1 2 3; do
  for b in "$1" "$2"; do
    for w in network-a minilm; do
      for t in mem quic; do
        if [ $w = minilm ]; then extra="--model models/all-minilm-l6-v2 --seq-len 32 --reps 3"; else extra="--reps 50"; fi
        line=$($b bench --workload $w $extra --transport $t --json 2>/dev/null | tail -1 | python3 -c "
import json,sys;d=json.loads(sys.stdin.read());d.pop('layers',None);d.pop('ops',None);print(json.dumps(d))")
        echo "{\"round\": $i, \"binary\": \"$(basename $b)\", \"load_avg_1m\": $(cut -d' ' -f1 /proc/loadavg), \"result\": $line}"
      done
    done
  done
done
