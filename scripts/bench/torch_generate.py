#!/usr/bin/python3
"""PyTorch eager reference for `mellama generate --benchmark` (run.sh): greedy decoding with a KV cache on the same
LLaMA shape (the model of torch_step.py, fp32, random weights: speed does not depend on them), a prompt of the same
number of tokens, the same number of new tokens, EOS ignored. tokens/s = new tokens / (prefill + decode seconds),
as MeLlama's TextGenerator reports it. Prints one JSON object (or writes --out)."""
import argparse, json, math, os, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_step import Llama, blas_library, rotate_half  # noqa: E402


def rope(head_dim, start, length, dtype):
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(start, start + length, dtype=torch.float64), inv_freq)
    both = torch.cat((angles, angles), dim=-1)
    return both.cos().to(dtype), both.sin().to(dtype)


@torch.no_grad()
def forward_cached(model, ids, cache, start):
    """ids [1, T] at positions start…start+T-1; cache: per layer [k, v] of earlier positions (or None)."""
    t = ids.shape[1]
    x = model.embed_tokens(ids)
    cos, sin = rope(model.head_dim, start, t, x.dtype)
    for i, layer in enumerate(model.layers):
        att = layer.self_attn
        h = layer.input_layernorm(x)
        b = h.shape[0]
        q = att.q_proj(h).view(b, t, att.heads, att.head_dim).transpose(1, 2)
        k = att.k_proj(h).view(b, t, att.kv_heads, att.head_dim).transpose(1, 2)
        v = att.v_proj(h).view(b, t, att.kv_heads, att.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache[i] is not None:
            k = torch.cat((cache[i][0], k), dim=2)
            v = torch.cat((cache[i][1], v), dim=2)
        cache[i] = (k, v)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(att.head_dim)
        if t > 1:  # causal within the new positions (they follow all cached ones)
            scores = scores + torch.full((t, k.shape[2]), float("-inf")).triu(k.shape[2] - t + 1)
        out = torch.matmul(F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)
        x = x + att.o_proj(out.transpose(1, 2).reshape(b, t, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(model.norm(x[:, -1:, :]))[:, -1, :]


def main():
    p = argparse.ArgumentParser()
    for name, default in [("hidden", 768), ("layers", 12), ("heads", 12), ("kv-heads", 0), ("ffn", 2048), ("vocab", 32000),
                          ("prompt-tokens", 32), ("new-tokens", 64), ("threads", 0), ("batch", 1), ("seq", 0)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--shape", default="custom")
    p.add_argument("--out")
    a = p.parse_args()
    a.kv_heads = a.kv_heads or a.heads
    torch.set_num_threads(a.threads or os.cpu_count())
    torch.manual_seed(99)
    model = Llama(a).eval()
    with torch.no_grad():
        for name, prm in model.named_parameters():
            prm.fill_(1.0) if name.endswith("norm.weight") else prm.normal_(0.0, 0.02)
    prompt = torch.randint(3, a.vocab, (1, a.prompt_tokens), generator=torch.Generator().manual_seed(1))

    def generate(n):
        cache = [None] * len(model.layers)
        t0 = time.perf_counter()
        logits = forward_cached(model, prompt, cache, 0)
        prefill = time.perf_counter() - t0
        tokens, pos = [], a.prompt_tokens
        t1 = time.perf_counter()
        for _ in range(n):
            nxt = logits.argmax(-1, keepdim=True)
            tokens.append(int(nxt))
            logits = forward_cached(model, nxt, cache, pos)
            pos += 1
        return prefill, time.perf_counter() - t1, tokens

    generate(min(8, a.new_tokens))  # warm-up
    prefill, decode, tokens = generate(a.new_tokens)
    result = {"impl": "pytorch-eager", "framework": f"PyTorch {torch.__version__} (greedy, KV cache)", "blas": blas_library(),
              "threads": torch.get_num_threads(), "prompt_tokens": a.prompt_tokens, "new_tokens": len(tokens),
              "prefill_seconds": prefill, "decode_seconds": decode, "tokens_per_second": len(tokens) / (prefill + decode),
              "decode_tokens_per_second": len(tokens) / decode}
    print(f"[torch-generate] {result['tokens_per_second']:.1f} tokens/s ({len(tokens)} new after a {a.prompt_tokens}-token prompt)", file=sys.stderr)
    text = json.dumps(result, indent=2)
    if a.out:
        open(a.out, "w").write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
