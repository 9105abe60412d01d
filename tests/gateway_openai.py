"""End-to-end checks of `veil gateway` with the official `openai` package (run by tests/gateway_openai.rs).

Environment: VEIL_GATEWAY_URL (http://HOST:PORT/v1), VEIL_GATEWAY_KEY, VEIL_EXE (the veil binary),
VEIL_COORDINATOR_KEY, VEIL_PLAINTEXT (JSON {"texts": [...], "embeddings": [...]} from `veil embed
--plaintext`), VEIL_WORKDIR (a scratch directory). Exits non-zero on the first failed check; prints
"ALL CHECKS PASSED" at the end.
"""

import json
import math
import os
import subprocess
import sys
import urllib.request

import openai
from openai import OpenAI

URL = os.environ["VEIL_GATEWAY_URL"]
KEY = os.environ["VEIL_GATEWAY_KEY"]
VEIL = os.environ["VEIL_EXE"]
COORDINATOR_KEY = os.environ["VEIL_COORDINATOR_KEY"]
WORKDIR = os.environ["VEIL_WORKDIR"]
with open(os.environ["VEIL_PLAINTEXT"]) as f:
    PLAINTEXT = json.load(f)

MODEL = "all-minilm-l6-v2"
CHAT_MODEL = "smollm2-135m-instruct"


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", flush=True)
        sys.exit(1)
    print(f"ok: {message}", flush=True)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# No retries: every status must be the gateway's first answer.
client = OpenAI(base_url=URL, api_key=KEY, max_retries=0, timeout=600)

models = [m.id for m in client.models.list().data]
check(MODEL in models, f"/v1/models lists {MODEL} ({models})")

# Embeddings of two texts. The openai package asks for base64 and decodes it itself.
texts = PLAINTEXT["texts"]
result = client.embeddings.create(model=MODEL, input=texts)
check(len(result.data) == 2, "two embeddings for two texts")
for i, (item, expected) in enumerate(zip(result.data, PLAINTEXT["embeddings"])):
    check(item.index == i, f"embedding {i} has index {i}")
    check(len(item.embedding) == 384, f"embedding {i} has 384 floats ({len(item.embedding)})")
    c = cosine(item.embedding, expected)
    check(c >= 0.99, f"embedding {i}: cosine {c:.6f} with veil embed --plaintext >= 0.99")
check(result.usage.prompt_tokens > 2 * 2, f"usage.prompt_tokens {result.usage.prompt_tokens}")

veil = result.model_extra["veil"]
check(veil["protocol"] == "spdz2k", f"protocol {veil['protocol']} is MAC-checked")
check(veil["verified"] is True, "the gateway checked every receipt before answering")
check(len(veil["jobs"]) >= 1, f"{len(veil['jobs'])} jobs")
check(veil["bytes"] > 0 and veil["seconds"] > 0, f"{veil['bytes']} bytes in {veil['seconds']:.2f} s")
covered = sorted(i for job in veil["jobs"] for i in job["inputs"])
check(covered == [0, 1], f"the jobs cover both inputs ({covered})")
for job in veil["jobs"]:
    operators = {m["operator"] for m in job["parties"]}
    check(len(job["parties"]) >= 2 and None not in operators, f"job {job['id']}: committee operators {sorted(operators)}")
    check(len(operators) == len(job["parties"]), f"job {job['id']}: every party of another operator")
    path = os.path.join(WORKDIR, f"receipt-{job['id']}.json")
    with open(path, "w") as f:
        json.dump(job["receipt"], f)
    verify = subprocess.run(
        [VEIL, "verify", path, "--coordinator-key", COORDINATOR_KEY], capture_output=True, text=True
    )
    check(verify.returncode == 0, f"job {job['id']}: veil verify: {verify.stdout.strip()} {verify.stderr.strip()}")

# Floats on request, the same vectors.
floats = client.embeddings.create(model=MODEL, input=texts[0], encoding_format="float")
c = cosine(floats.data[0].embedding, PLAINTEXT["embeddings"][0])
check(c >= 0.99, f"encoding_format=float: cosine {c:.6f}")

# Errors, as the openai package raises them.
try:
    OpenAI(base_url=URL, api_key="sk-wrong-0123456789abcdef", max_retries=0).embeddings.create(model=MODEL, input="x")
    check(False, "a wrong key is refused")
except openai.AuthenticationError:
    check(True, "a wrong key raises AuthenticationError")
try:
    client.embeddings.create(model="text-embedding-3-small", input="x")
    check(False, "an unknown model is refused")
except openai.NotFoundError:
    check(True, "an unknown model raises NotFoundError")
try:
    client.embeddings.create(model=MODEL, input="privacy " * 1000)
    check(False, "a too-long input is refused")
except openai.BadRequestError as e:
    check(e.code == "context_length_exceeded", f"a too-long input raises BadRequestError ({e.code})")
try:
    client.embeddings.create(model=MODEL, input=[])
    check(False, "an empty input array is refused")
except openai.BadRequestError:
    check(True, "an empty input array raises BadRequestError")

# A classifier on veil's own route (not an OpenAI endpoint; plain HTTP).
classifier = PLAINTEXT["classifier"]
check(classifier in models, f"/v1/models lists the deployed classifier {classifier[:12]}...")
request = urllib.request.Request(
    URL + "/veil/predict",
    data=json.dumps({"model": classifier, "inputs": PLAINTEXT["rows"]}).encode(),
    headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=600) as r:
    predicted = json.load(r)
classes = [p["class"] for p in predicted["data"]]
check(classes == PLAINTEXT["classes"], f"private classes {classes} are the plaintext model's")
check(predicted["veil"]["verified"] is True, "the classifier job's receipt was checked")
job = predicted["veil"]["jobs"][0]
path = os.path.join(WORKDIR, f"receipt-{job['id']}.json")
with open(path, "w") as f:
    json.dump(job["receipt"], f)
verify = subprocess.run([VEIL, "verify", path, "--coordinator-key", COORDINATOR_KEY], capture_output=True, text=True)
check(verify.returncode == 0, f"classifier job {job['id']}: veil verify: {verify.stdout.strip()} {verify.stderr.strip()}")

# Chat, where the gateway serves a chat model.
if CHAT_MODEL in models:
    question = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=question, max_tokens=24, temperature=0)
    text = answer.choices[0].message.content
    check("Paris" in text, f"chat answers {text!r}")
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=CHAT_MODEL, messages=question, max_tokens=24, temperature=0, stream=True
        )
        if chunk.choices
    )
    check("Paris" in streamed, f"streamed chat answers {streamed!r}")
else:
    try:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}])
        check(False, "chat is refused while no chat model is served")
    except openai.NotFoundError as e:
        check(True, f"chat without a chat model raises NotFoundError ({e.code})")

print("ALL CHECKS PASSED", flush=True)
