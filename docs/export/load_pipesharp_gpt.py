"""Load a GPT exported by `pipesharp export` into PyTorch, and continue a prompt.

    python3 load_pipesharp_gpt.py FOLDER/model.pt --prompt "ROMEO:" --tokens 200
    python3 load_pipesharp_gpt.py FOLDER/model.safetensors --prompt "ROMEO:" --logits   # last position's logits, JSON

The model file (.pt: torch.load; .safetensors: the safetensors package) holds the parameters under the names below;
config.json beside it holds the shape, the conventions and the tokenizer (docs/export.md). Needs PyTorch >= 1.13 only.
"""
import argparse
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """Pre-LayerNorm block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, c):
        super().__init__()
        w, eps = c["width"], c["layer_norm_epsilon"]
        self.heads = c["heads"]
        self.ln_1 = nn.LayerNorm(w, eps=eps)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(w, 3 * w)
        self.attn.c_proj = nn.Linear(w, w)
        self.ln_2 = nn.LayerNorm(w, eps=eps)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(w, 4 * w)
        self.mlp.c_proj = nn.Linear(4 * w, w)

    def attention(self, x):
        b, t, w = x.shape
        q, k, v = self.attn.c_attn(x).split(w, dim=2)  # rows [q; k; v]
        q, k, v = (z.view(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(w // self.heads)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        y = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v
        return self.attn.c_proj(y.transpose(1, 2).reshape(b, t, w))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))  # exact (erf) GELU


class PipeSharpGpt(nn.Module):
    def __init__(self, c):
        super().__init__()
        if c.get("model_type") != "pipesharp-gpt" or c.get("format_version") != 1:
            raise ValueError("not a PipeSharp GPT export of format 1: " + str(c.get("model_type")))
        self.embed = nn.Module()
        self.embed.wte = nn.Embedding(c["vocabulary_size"], c["width"])
        self.embed.wpe = nn.Embedding(c["context_length"], c["width"])
        for i in range(c["layers"]):
            self.add_module(f"block{i}", Block(c))
        self.blocks = [getattr(self, f"block{i}") for i in range(c["layers"])]
        self.head = nn.Module()
        self.head.ln_f = nn.LayerNorm(c["width"], eps=c["layer_norm_epsilon"])
        self.head.lm_head = nn.Linear(c["width"], c["vocabulary_size"], bias=False)

    def forward(self, ids):  # ids [batch, t] -> logits [batch, t, vocabulary]
        x = self.embed.wte(ids) + self.embed.wpe(torch.arange(ids.shape[1]))  # positions 0 .. t-1
        for block in self.blocks:
            x = block(x)
        return self.head.lm_head(self.head.ln_f(x))


def load(path):
    """The model (eval mode) and its config.json."""
    with open(os.path.join(os.path.dirname(os.path.abspath(path)), "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path)
    model = PipeSharpGpt(config)
    model.load_state_dict(state, strict=True)  # a tied head is stored under both names
    return model.eval(), config


def tokenizer(config):
    """encode(text) -> ids and decode(ids) -> text, as in training."""
    spec = config["tokenizer"]
    if spec["kind"] == "char":
        chars = spec["characters"]
        index = {ch: i for i, ch in enumerate(chars)}
        return (lambda text: [index[ch] for ch in text]), (lambda ids: "".join(chars[i] for i in ids))
    import tiktoken  # GPT-2's BPE
    enc = tiktoken.get_encoding("gpt2")
    return (lambda text: enc.encode(text, allowed_special="all")), enc.decode


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logits", action="store_true", help="print the logits after the prompt as JSON, then stop")
    args = parser.parse_args()
    model, config = load(args.model)
    encode, decode = tokenizer(config)
    ids = encode(args.prompt)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        if args.logits:
            print(json.dumps(model(torch.tensor([ids]))[0, -1].tolist()))
            return
        for _ in range(args.tokens):
            logits = model(torch.tensor([ids[-config["context_length"]:]]))[0, -1]
            if args.temperature == 0:
                ids.append(int(logits.argmax()))
            else:
                ids.append(int(torch.multinomial((logits / args.temperature).softmax(-1), 1)))
    print(decode(ids))


if __name__ == "__main__":
    main()
