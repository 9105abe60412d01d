#!/usr/bin/env python3
"""Issue 18's embed figure: `veil embed` through `veil devnet` against the in-memory bench, one session.

Starts `veil devnet` (5 nodes), deploys all-minilm-l6-v2 (semi2k), embeds the first line of
docs/transport-ten-sentences.txt (32 tokens) once as a warm-up and then `--runs` times, the whole file
`--ten` times, and runs `veil bench --workload minilm --seq-len 32 --transport mem --reps 3 --json` before and
after; prints one JSON object (every run's raw output, the 1-minute load average beside it, and the medians).
With `--keep-logs DIR` the devnet's logs (coordinator and nodes) are copied to DIR for a timeline.

Usage: scripts/embed_latency.py [--veil target/release/veil] [--runs 7] [--ten 2] [--label after]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEN = os.path.join(ROOT, "docs", "transport-ten-sentences.txt")


def load():
    return round(os.getloadavg()[0], 2)


def run_json(cmd):
    start = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.time() - start
    if out.returncode != 0:
        raise SystemExit(f"{cmd}: exit {out.returncode}\n{out.stderr[-3000:]}")
    line = out.stdout.strip().splitlines()[-1]
    return wall, json.loads(line)


def bench(veil):
    wall, result = run_json([veil, "bench", "--workload", "minilm", "--protocol", "semi2k", "--parties", "3",
                             "--seq-len", "32", "--transport", "mem", "--reps", "3", "--json"])
    result.pop("layers", None)
    result.pop("ops", None)
    return {"case": "bench-mem-minilm-32", "wall_s": wall, "load_avg_1m": load(), "result": result}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--veil", default=os.path.join(ROOT, "target", "release", "veil"))
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--ten", type=int, default=2)
    p.add_argument("--label", default="")
    p.add_argument("--keep-logs", default=None)
    args = p.parse_args()
    veil = os.path.abspath(args.veil)
    with open(TEN) as f:
        first = f.readline().strip()
    runs = [bench(veil)]
    env = dict(os.environ)
    env.setdefault("VEIL_MODELS", os.path.join(ROOT, "models"))
    devnet = subprocess.Popen([veil, "devnet", "--nodes", "5", "--log", "info"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        ready = json.loads(devnet.stdout.readline())
        client = tempfile.mkdtemp(prefix="veil-embed-client-")
        c = ["--coordinator", ready["coordinator"], "--coordinator-key", ready["coordinator_key"],
             "--identity", client, "--json"]
        run_json([veil, "deploy", "--model", "all-minilm-l6-v2", "--protocol", "semi2k"] + c)
        model = os.path.join(env["VEIL_MODELS"], "all-minilm-l6-v2")
        embed = [veil, "embed", "--model", model, "--check"] + c
        for i in range(args.runs + 1):
            wall, result = run_json(embed + [first])
            result.pop("embeddings", None)
            result.pop("embedding", None)
            case = "warmup" if i == 0 else "one-sentence-32-tokens"
            runs.append({"case": case, "wall_s": wall, "load_avg_1m": load(), "result": result})
        for _ in range(args.ten):
            wall, result = run_json(embed + ["--input", TEN])
            result.pop("embeddings", None)
            runs.append({"case": "ten-sentences", "wall_s": wall, "load_avg_1m": load(), "result": result})
        if args.keep_logs:
            shutil.copytree(ready["dir"], args.keep_logs, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.redb", "blobs", "models", "*.key"))
    finally:
        devnet.stdin.close()
        devnet.wait(timeout=60)
    runs.append(bench(veil))
    one = [r["result"]["seconds"] for r in runs if r["case"] == "one-sentence-32-tokens"]
    ten = [r["result"]["seconds"] for r in runs if r["case"] == "ten-sentences"]
    mem = statistics.median(r["result"]["latency_ms"] for r in runs if r["case"].startswith("bench"))
    summary = {
        "one_sentence_median_s": statistics.median(one),
        "ten_sentences_median_s": statistics.median(ten) if ten else None,
        "mem_minilm_latency_ms": mem,
        "ratio_embed_to_mem": statistics.median(one) / (mem / 1000.0),
        "ratio_ten_to_one": (statistics.median(ten) / statistics.median(one)) if ten else None,
    }
    print(json.dumps({"label": args.label, "command": " ".join(sys.argv), "summary": summary, "runs": runs}))


if __name__ == "__main__":
    main()
