#!/bin/bash
# Issue 17: semi2k, rep3, rep3m in memory (NEW binary), and rep3m of the OLD binary beside it; 3 rounds, then minilm once.
# Usage: scripts/rep3_rep3m_bench.sh OLD_BINARY NEW_BINARY > out.jsonl   (from the repository root; needs models/all-minilm-l6-v2)
set -euo pipefail
OLD=$1 NEW=$2
for i in 1 2 3; do
  for w in network-a lenet; do
    if [ $w = lenet ]; then r=3; else r=20; fi
    for pb in "semi2k $NEW" "rep3 $NEW" "rep3m $OLD" "rep3m $NEW"; do
      set -- $pb
      reps=$r; [ $1 = rep3m ] || reps=$((r*10))
      line=$($2 bench --workload $w --protocol $1 --parties 3 --reps $reps --json 2>/dev/null | tail -1 | python3 -c "
import json,sys;d=json.loads(sys.stdin.read());d.pop('layers',None);d.pop('ops',None);print(json.dumps(d))")
      echo "{\"round\": $i, \"binary\": \"$(basename $2)\", \"load_avg_1m\": $(cut -d' ' -f1 /proc/loadavg), \"result\": $line}"
    done
  done
done
for p in semi2k rep3 rep3m; do
  line=$($NEW bench --workload minilm --model models/all-minilm-l6-v2 --seq-len 32 --protocol $p --parties 3 --reps 1 --json 2>/dev/null | tail -1 | python3 -c "
import json,sys;d=json.loads(sys.stdin.read());d.pop('layers',None);d.pop('ops',None);print(json.dumps(d))")
  echo "{\"round\": 1, \"binary\": \"$(basename $NEW)\", \"load_avg_1m\": $(cut -d' ' -f1 /proc/loadavg), \"result\": $line}"
done
