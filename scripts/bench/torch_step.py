#!/usr/bin/python3
"""PyTorch eager reference for scripts/bench/run.sh: the same LLaMA training step as MeLlama's, written the way
HF transformers writes LLaMA (RMSNorm with fp32 statistics, rotate-half RoPE, SwiGLU, causal attention, untied
head), same shape, batch, dtype, loss (fp32 cross-entropy), grad clipping (1.0) and AdamW (betas 0.9/0.95,
eps 1e-8, decay 0.1 on matrices only). Prints one JSON object (or writes --out).

Runs on Debian's python3-torch (1.13, no scaled_dot_product_attention: the classic masked-softmax attention is
used there, SDPA with is_causal where the installed torch has it)."""
import argparse, json, math, os, statistics, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


def log(msg):
    print(f"[torch-bench] {msg}", file=sys.stderr, flush=True)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        variance = x32.pow(2).mean(-1, keepdim=True)
        return self.weight * (x32 * torch.rsqrt(variance + self.eps)).to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, d // heads
        self.q_proj = nn.Linear(d, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        if hasattr(F, "scaled_dot_product_attention"):
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
            probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(probs, v)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class Mlp(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.gate_proj = nn.Linear(d, ffn, bias=False)
        self.up_proj = nn.Linear(d, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn, eps):
        super().__init__()
        self.self_attn = Attention(d, heads, kv_heads)
        self.mlp = Mlp(d, ffn)
        self.input_layernorm = RMSNorm(d, eps)
        self.post_attention_layernorm = RMSNorm(d, eps)

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden)
        self.layers = nn.ModuleList(Layer(a.hidden, a.heads, a.kv_heads, a.ffn, 1e-6) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden, 1e-6)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False)
        self.head_dim = a.hidden // a.heads

    def forward(self, ids):
        t = ids.shape[1]
        x = self.embed_tokens(ids)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim))
        angles = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)
        both = torch.cat((angles, angles), dim=-1)
        cos, sin = both.cos().to(x.dtype).to(x.device), both.sin().to(x.dtype).to(x.device)
        mask = torch.full((t, t), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def blas_library():
    """The BLAS shared library this process actually loaded (Debian's torch links the generic libblas.so.3, which
    is reference BLAS unless an optimized one such as OpenBLAS provides it)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return ", ".join(sorted(os.path.realpath(p) for p in paths)) or "none found"
    except OSError:
        return "unknown"


def peak(device, dtype, size, trials=5, trial_seconds=0.25):
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    c = torch.empty(size, size, dtype=dtype, device=device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    start, n = time.perf_counter(), 0
    while True:
        torch.mm(a, b, out=c); sync(); n += 1
        if n >= 2 and time.perf_counter() - start >= 0.1:
            break
    reps = max(1, round(trial_seconds / ((time.perf_counter() - start) / n)))
    rates, per_cpu = [], 0.0
    for _ in range(trials):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        sync()
        rates.append(2.0 * size ** 3 * reps / (time.perf_counter() - t0))
        per_cpu = max(per_cpu, 2.0 * size ** 3 * reps / max(1e-9, time.process_time() - c0))
    rates.sort()
    return {"matmul_size": size, "dtype": str(dtype), "best_gflops": rates[-1] / 1e9, "median_gflops": rates[len(rates) // 2] / 1e9,
            "best_gflops_per_cpu_second": per_cpu / 1e9, "trials": trials, "matmuls_per_trial": reps}


def main():
    p = argparse.ArgumentParser()
    for name, default in [("hidden", 768), ("layers", 12), ("heads", 12), ("kv-heads", 0), ("ffn", 2048), ("vocab", 32000),
                          ("batch", 4), ("seq", 256), ("warmup", 2), ("steps", 5), ("threads", 0), ("peak-size", 2048)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--shape", default="custom")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--out")
    a = p.parse_args()
    a.kv_heads = a.kv_heads or a.heads
    torch.set_num_threads(a.threads or os.cpu_count())
    device = torch.device(a.device)
    # bf16: what a PyTorch user would run, autocast over fp32 weights (fp32 master weights and AdamW).
    autocast_dtype = torch.bfloat16 if a.dtype == "bf16" else None
    peak_dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    blas = blas_library()
    log(f"BLAS: {blas}")
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {a.shape}, batch {a.batch}x{a.seq}, {a.dtype} on {device}")

    peak_before = peak(device, peak_dtype, a.peak_size)
    log(f"matmul peak before: best {peak_before['best_gflops']:.1f} GFLOP/s")

    torch.manual_seed(1234)
    model = Llama(a).to(device)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("norm.weight"):
                prm.fill_(1.0)
            else:
                prm.normal_(0.0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    matmul_params = params - a.vocab * a.hidden - (2 * a.layers + 1) * a.hidden
    flops_per_token = 6.0 * matmul_params + 12.0 * a.layers * a.hidden * a.seq
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    adamw_kwargs = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8)
    # The fastest AdamW this torch offers on the device: fused (torch >= 2.4 on CPU, 2.0 on CUDA) > foreach > loop.
    optimizer, adamw_variant = None, "for-loop"
    for variant in ("fused", "foreach"):
        try:
            optimizer = torch.optim.AdamW(groups, **adamw_kwargs, **{variant: True})
            adamw_variant = variant
            break
        except (TypeError, RuntimeError, ValueError):
            continue
    if optimizer is None:
        optimizer = torch.optim.AdamW(groups, **adamw_kwargs)
    model.train()

    g = torch.Generator().manual_seed(42)
    batches = [torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g) for _ in range(4)]
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    times, cpu_times, losses = [], [], []
    for i in range(a.warmup + a.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        ids = batches[i % len(batches)].to(device)
        inputs, labels = ids[:, :-1], ids[:, 1:]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_dtype is not None):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().reshape(-1, a.vocab), labels.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
        sync()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        losses.append(loss_value)
        log(f"step {i + 1}/{a.warmup + a.steps}{' (warm-up)' if i < a.warmup else ''}: {dt:.3f} s, {a.batch * a.seq / dt:.1f} tok/s, loss {loss_value:.4f}, cpu {dc:.2f} s")
        if i >= a.warmup:
            times.append(dt); cpu_times.append(dc)

    peak_after = peak(device, peak_dtype, a.peak_size)
    log(f"matmul peak after: best {peak_after['best_gflops']:.1f} GFLOP/s")
    median = statistics.median(times)
    tps = a.batch * a.seq / median
    achieved = tps * flops_per_token
    best_peak = max(peak_before["best_gflops"], peak_after["best_gflops"]) * 1e9
    result = {
        "impl": "pytorch-eager",
        "framework": f"PyTorch {torch.__version__} (python {sys.version.split()[0]}, {'SDPA is_causal' if hasattr(F, 'scaled_dot_product_attention') else 'masked softmax attention'}, AdamW {adamw_variant})",
        "device": str(device), "dtype": a.dtype, "threads": torch.get_num_threads(), "blas": blas,
        "shape": {"name": a.shape, "hidden": a.hidden, "layers": a.layers, "heads": a.heads, "kv_heads": a.kv_heads, "ffn": a.ffn,
                  "vocab": a.vocab, "batch": a.batch, "seq": a.seq, "parameters": params, "matmul_parameters": matmul_params,
                  "train_flops_per_token": flops_per_token},
        "warmup_steps": a.warmup, "step_seconds": times, "step_cpu_seconds": cpu_times, "median_step_seconds": median, "median_step_cpu_seconds": statistics.median(cpu_times),
        "tokens_per_second": tps, "achieved_gflops": achieved / 1e9, "peak_before": peak_before, "peak_after": peak_after,
        "peak_gflops": best_peak / 1e9, "mfu": achieved / best_peak,
        "mfu_cpu_time": a.batch * a.seq / statistics.median(cpu_times) * flops_per_token
                        / (1e9 * max(peak_before["best_gflops_per_cpu_second"], peak_after["best_gflops_per_cpu_second"])), "losses": losses,
    }
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
