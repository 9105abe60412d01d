"""veil through the official OpenAI Python client: embeddings, a chat completion and a streamed chat.

    pip install openai
    veil gateway --listen 127.0.0.1:8080 --coordinator ADDR --coordinator-key KEY --identity gw --api-key-file keys
    VEIL_API_KEY=$(cat keys) python3 examples/openai_client.py

Every answer is computed on secret shares by committees of independent operators; its `veil` object names
the jobs, committees and receipts (`veil verify FILE --coordinator-key KEY` checks a receipt).
"""

import json
import os

import openai
from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("VEIL_BASE_URL", "http://127.0.0.1:8080/v1"),
    api_key=os.environ["VEIL_API_KEY"],
)

print("models:", [m.id for m in client.models.list().data])

# Embeddings: one private job per distinct token count.
result = client.embeddings.create(
    model="all-minilm-l6-v2",
    input=["Private inference keeps the input secret.", "The weather is nice today."],
)
veil = result.model_extra["veil"]
for item in result.data:
    print(f"embedding {item.index}: {len(item.embedding)} floats, first {item.embedding[:3]}")
print(f"{result.usage.prompt_tokens} tokens; protocol {veil['protocol']}, receipts checked: {veil['verified']}")
for job in veil["jobs"]:
    operators = [member["operator"] for member in job["parties"]]
    print(f"job {job['id']}: inputs {job['inputs']}, operators {operators}")
    if job["receipt"]:
        with open(f"receipt-{job['id']}.json", "w") as f:
            json.dump(job["receipt"], f)

# Chat, where the gateway serves a chat model.
question = [{"role": "user", "content": "What is the capital of France?"}]
try:
    answer = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=question, max_tokens=24, temperature=0
    )
    print("chat:", answer.choices[0].message.content, f"({answer.choices[0].finish_reason})")
    print("streamed: ", end="", flush=True)
    for chunk in client.chat.completions.create(
        model="smollm2-135m-instruct", messages=question, max_tokens=24, temperature=0, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
except openai.NotFoundError as e:
    print("chat is not served by this gateway:", e.message)
