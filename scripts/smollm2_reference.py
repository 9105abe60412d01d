#!/usr/bin/env python3
"""Independent reference for veil's SmolLM2 chat path: prompt ids and greedy tokens from the GGUF alone.

Written apart from the Rust code on purpose (numpy in float64, the `gguf` package's own dequantisation,
a plain byte-level BPE, the chat template rendered with jinja2 as Hugging Face does), so that agreement
with `veil chat --plaintext` checks the Rust reader, tokenizer, template and model together.

    pip install numpy gguf regex jinja2
    python3 scripts/smollm2_reference.py models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf \
        "What is the capital of France?" --max-tokens 16 > engine/tests/fixtures/smollm2_greedy.json
"""

import argparse
import json

import jinja2
import numpy as np
import regex
from gguf import GGUFReader
from gguf.quants import dequantize

# Hugging Face's ByteLevel pre-tokenizer pattern (GPT-2's).
GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def field(reader, key):
    return reader.fields[key].contents()


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


class Bpe:
    def __init__(self, reader):
        self.tokens = field(reader, "tokenizer.ggml.tokens")
        types = field(reader, "tokenizer.ggml.token_type")
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(field(reader, "tokenizer.ggml.merges"))}
        # Control tokens (type 3) are matched whole in the text, longest first.
        self.special = sorted((t for t, ty in zip(self.tokens, types) if ty == 3), key=len, reverse=True)
        self.byte_map = bytes_to_unicode()

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == 1 << 30:
                break
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
        return [self.ids[p] for p in parts]

    def encode_plain(self, text):
        out = []
        # SmolLM's pre-tokenizer: every digit on its own, then the GPT-2 pattern.
        for chunk in regex.split(r"(\p{N})", text):
            if not chunk:
                continue
            for piece in GPT2_PATTERN.findall(chunk):
                mapped = "".join(self.byte_map[b] for b in piece.encode("utf-8"))
                out.extend(self.bpe(mapped))
        return out

    def encode(self, text):
        pattern = "(" + "|".join(regex.escape(s) for s in self.special) + ")"
        out = []
        for chunk in regex.split(pattern, text):
            if chunk in self.ids and chunk in self.special:
                out.append(self.ids[chunk])
            elif chunk:
                out.extend(self.encode_plain(chunk))
        return out


def tensor(reader, name):
    for t in reader.tensors:
        if t.name == name:
            w = dequantize(t.data, t.tensor_type).astype(np.float64)
            return w.reshape([int(x) for x in reversed(t.shape)])
    raise KeyError(name)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, theta):
    # GGUF stores Llama's Q and K rows permuted so that each rotated pair is adjacent: (2i, 2i + 1).
    d = x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    angles = positions[:, None] * freqs[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


class Llama:
    def __init__(self, reader):
        g = lambda k: field(reader, "llama." + k)
        self.layers = int(g("block_count"))
        self.heads = int(g("attention.head_count"))
        self.kv_heads = int(g("attention.head_count_kv"))
        self.eps = float(g("attention.layer_norm_rms_epsilon"))
        self.theta = float(g("rope.freq_base"))
        self.embed = tensor(reader, "token_embd.weight")
        self.norm = tensor(reader, "output_norm.weight")
        self.blocks = []
        for i in range(self.layers):
            t = lambda n: tensor(reader, f"blk.{i}.{n}.weight")
            self.blocks.append({n: t(n) for n in ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                   "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]})

    def logits(self, ids):
        x = self.embed[ids]
        n = len(ids)
        pos = np.arange(n, dtype=np.float64)
        hd = x.shape[1] // self.heads
        group = self.heads // self.kv_heads
        mask = np.triu(np.full((n, n), -np.inf), 1)
        for b in self.blocks:
            h = rms_norm(x, b["attn_norm"], self.eps)
            q = rope((h @ b["attn_q"].T).reshape(n, self.heads, hd), pos, self.theta)
            k = rope((h @ b["attn_k"].T).reshape(n, self.kv_heads, hd), pos, self.theta)
            v = (h @ b["attn_v"].T).reshape(n, self.kv_heads, hd)
            ctx = np.empty((n, self.heads, hd))
            for head in range(self.heads):
                kv = head // group
                s = q[:, head, :] @ k[:, kv, :].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(axis=1, keepdims=True))
                ctx[:, head, :] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kv, :]
            x = x + ctx.reshape(n, -1) @ b["attn_output"].T
            h = rms_norm(x, b["ffn_norm"], self.eps)
            gate = h @ b["ffn_gate"].T
            x = x + ((gate / (1 + np.exp(-gate))) * (h @ b["ffn_up"].T)) @ b["ffn_down"].T
        return rms_norm(x, self.norm, self.eps) @ self.embed.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("prompt")
    ap.add_argument("--system", default=None)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    reader = GGUFReader(args.gguf)
    messages = ([{"role": "system", "content": args.system}] if args.system is not None else [])
    messages.append({"role": "user", "content": args.prompt})
    template = jinja2.Environment().from_string(field(reader, "tokenizer.chat_template"))
    rendered = template.render(messages=messages, add_generation_prompt=True)
    bpe = Bpe(reader)
    prompt_ids = bpe.encode(rendered)
    eos = int(field(reader, "tokenizer.ggml.eos_token_id"))
    model = Llama(reader)
    ids = list(prompt_ids)
    tokens = []
    margins = []
    for _ in range(args.max_tokens):
        logits = model.logits(ids)[-1]
        top = np.argsort(logits)[::-1][:2]
        tokens.append(int(top[0]))
        margins.append(float(logits[top[0]] - logits[top[1]]))
        if top[0] == eos:
            break
        ids.append(int(top[0]))
    text = "".join(bpe.tokens[t] for t in tokens if t != eos)
    inverse = {c: b for b, c in bpe.byte_map.items()}
    text = bytes(inverse[c] for c in text).decode("utf-8", errors="replace")
    print(json.dumps({
        "prompt": args.prompt,
        "system": args.system,
        "max_tokens": args.max_tokens,
        "rendered": rendered,
        "prompt_tokens": prompt_ids,
        "tokens": tokens,
        "text": text,
        "top2_margins": margins,
    }, indent=1))


if __name__ == "__main__":
    main()
