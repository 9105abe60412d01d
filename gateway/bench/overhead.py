"""Latency overhead of `veil gateway` on a private embedding against `veil embed --coordinator`, one run.

Starts `veil devnet` and `veil gateway` (which deploys all-MiniLM-L6-v2 under --protocol), then, for
--rounds rounds, embeds the same text once with each path, alternating which goes first:
- cli: `veil embed TEXT --coordinator ... --protocol P --json`, timed as a whole process (start, model
  load, jobs) and by its own `seconds` (its jobs only, from submission to the opened embedding);
- gateway: `POST /v1/embeddings` over HTTP (stdlib urllib), timed from sending to the parsed answer.
Prints one raw JSON line per measurement, then a summary line with medians and ratios
(gateway / cli). Stdlib only.

    python3 gateway/bench/overhead.py --veil target/release/veil --rounds 7 > overhead.jsonl
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--veil", default="target/release/veil")
parser.add_argument("--models", default="models")
parser.add_argument("--rounds", type=int, default=7)
parser.add_argument("--protocol", default="spdz2k")
parser.add_argument("--text", default="Private inference keeps the input secret.")
args = parser.parse_args()
env = dict(os.environ, VEIL_MODELS=os.path.abspath(args.models))
work = tempfile.mkdtemp(prefix="veil-gw-bench-")


def ready_line(proc, what):
    line = proc.stdout.readline()
    ready = json.loads(line)
    assert ready["event"] == "ready", f"{what}: {line}"
    return ready


devnet = subprocess.Popen(
    [args.veil, "devnet", "--nodes", "5", "--log", "warn"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
)
gateway = None
try:
    net = ready_line(devnet, "devnet")
    key = "sk-veil-bench-0123456789abcdef"
    with open(os.path.join(work, "keys"), "w") as f:
        f.write(key + "\n")
    gateway = subprocess.Popen(
        [args.veil, "gateway", "--listen", "127.0.0.1:0", "--coordinator", net["coordinator"],
         "--coordinator-key", net["coordinator_key"], "--identity", os.path.join(work, "gateway"),
         "--api-key-file", os.path.join(work, "keys"), "--model", "all-minilm-l6-v2",
         "--protocol", args.protocol],
        stdout=subprocess.PIPE, stderr=open(os.path.join(work, "gateway.log"), "w"), text=True, env=env,
    )
    url = "http://" + ready_line(gateway, "gateway")["address"] + "/v1/embeddings"
    body = json.dumps({"model": "all-minilm-l6-v2", "input": args.text, "encoding_format": "float"}).encode()

    def via_gateway():
        request = urllib.request.Request(
            url, data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        )
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as r:
            answer = json.load(r)
        wall = time.perf_counter() - start
        return {"path": "gateway", "wall_s": wall, "jobs": [j["id"] for j in answer["veil"]["jobs"]],
                "verified": answer["veil"]["verified"], "gateway_s": answer["veil"]["seconds"]}

    def via_cli():
        start = time.perf_counter()
        out = subprocess.run(
            [args.veil, "embed", args.text, "--coordinator", net["coordinator"], "--coordinator-key",
             net["coordinator_key"], "--identity", os.path.join(work, "cli"), "--protocol", args.protocol,
             "--model", os.path.join(args.models, "all-minilm-l6-v2"), "--json"],
            capture_output=True, text=True, env=env, check=True,
        )
        wall = time.perf_counter() - start
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return {"path": "cli", "wall_s": wall, "jobs": result["jobs"], "receipts": result["receipts"],
                "cli_jobs_s": result["seconds"]}

    via_gateway()  # warm-up of both paths (first job of a fresh network), not counted
    via_cli()
    rows = []
    for r in range(args.rounds):
        order = (via_gateway, via_cli) if r % 2 == 0 else (via_cli, via_gateway)
        for measure in order:
            row = dict(measure(), round=r)
            rows.append(row)
            print(json.dumps(row), flush=True)
    gw = statistics.median(r["wall_s"] for r in rows if r["path"] == "gateway")
    cli_wall = statistics.median(r["wall_s"] for r in rows if r["path"] == "cli")
    cli_jobs = statistics.median(r["cli_jobs_s"] for r in rows if r["path"] == "cli")
    print(json.dumps({
        "summary": True, "rounds": args.rounds, "protocol": args.protocol, "text": args.text,
        "gateway_http_median_s": gw, "cli_process_median_s": cli_wall, "cli_jobs_median_s": cli_jobs,
        "ratio_gateway_over_cli_process": gw / cli_wall, "ratio_gateway_over_cli_jobs": gw / cli_jobs,
    }), flush=True)
finally:
    if gateway:
        gateway.kill()
        gateway.wait()
    devnet.stdin.close()
    devnet.wait()
