#!/bin/bash
# The PRG's speed where it shows: the dealer's time (`dealer_ms`, dealt before the start line in memory) and the
# online latency (parties expand their seeds as they go), two binaries interleaved, 3 rounds, one JSON line per
# run on stdout. Also semi2k against rep3 on lenet (issue 17's ratio), in the same rounds.
# Usage: scripts/prg_bench.sh OLD_BINARY NEW_BINARY > out.jsonl   (run from the repository root; needs
# models/all-minilm-l6-v2)
set -euo pipefail
old=$1
new=$2
cases=("minilm semi2k" "lenet semi2k" "lenet rep3" "network-a semi2k")
for i in 1 2 3; do
  for b in "$old" "$new"; do
    for c in "${cases[@]}"; do
      read -r w p <<< "$c"
      if [ "$w" = minilm ]; then extra="--model models/all-minilm-l6-v2 --seq-len 32 --reps 3"; else extra="--reps 50"; fi
      line=$("$b" bench --workload "$w" --protocol "$p" --parties 3 $extra --json 2>/dev/null | tail -1 | python3 -c "
import json,sys;d=json.loads(sys.stdin.read());d.pop('layers',None);d.pop('ops',None);print(json.dumps(d))")
      echo "{\"round\": $i, \"binary\": \"$(basename "$b")\", \"load_avg_1m\": $(cut -d' ' -f1 /proc/loadavg), \"result\": $line}"
    done
  done
done
