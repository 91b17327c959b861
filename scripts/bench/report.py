#!/usr/bin/python3
"""Combines the parts run.sh wrote (one JSON file each) into results/<date>-<host>.json and a Markdown table
(printed and saved next to it). Standard library only."""
import json, os, sys


def load(parts, name):
    path = os.path.join(parts, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt(x, digits=1):
    if x is None:
        return "—"
    if isinstance(x, (int, float)):
        if abs(x) >= 1e6:
            return f"{x / 1e6:,.{2}f} M"
        return f"{x:,.{digits}f}"
    return str(x)


def pct(x):
    return "—" if x is None else f"{100 * x:.1f}%"


def main():
    parts, out_json, out_md = sys.argv[1], sys.argv[2], sys.argv[3]
    names = sorted(n[:-5] for n in os.listdir(parts) if n.endswith(".json"))
    result = {n: load(parts, n) for n in names}
    machine = result.get("machine", {})
    loads = {n: machine.get("load_before", {}).get(n) for n in names}
    md = []
    md.append(f"# MeLlama benchmark, {machine.get('date', '?')} on {machine.get('host', '?')}")
    md.append("")
    md.append(f"- CPU: {machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores; memory {machine.get('memory_gib', '?')} GiB; GPU: {machine.get('gpu', 'none')}")
    md.append(f"- OS: {machine.get('os', '?')}, kernel {machine.get('kernel', '?')}; .NET {machine.get('dotnet', '?')}; git {machine.get('git', '?')}")
    md.append(f"- Load average (1/5/15 min) at start: {machine.get('load_start', '?')}; at end: {machine.get('load_end', '?')}")
    md.append(f"- Command: `{machine.get('command', '?')}`; OpenMP/BLAS environment: {machine.get('omp_env') or 'defaults'}")
    md.append("")

    tm, tt = result.get("train_mellama"), result.get("train_torch")
    if tm or tt:
        s = (tm or tt)["shape"]
        md.append(f"## Training step: forward + backward + AdamW ({(tm or tt)['dtype']}, {s['parameters'] / 1e6:.1f}M params: d={s['hidden']}, "
                  f"{s['layers']} layers, {s['heads']} heads, SwiGLU {s['ffn']}, vocab {s['vocab']}; batch {s['batch']}×{s['seq']})")
        md.append("")
        md.append("| implementation | tokens/s | median step (s) | CPU s per step | matmul peak, same process (GFLOP/s) | achieved (GFLOP/s) | MFU | MFU by CPU time | threads | load avg before |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for key, r in (("train_mellama", tm), ("train_torch", tt)):
            if r is None:
                continue
            name = r["framework"] + (f", BLAS {os.path.basename(r['blas'])}" if r.get("blas") else "")
            md.append(f"| {name} | {fmt(r['tokens_per_second'])} | {fmt(r['median_step_seconds'], 3)} | {fmt(r.get('median_step_cpu_seconds'), 3)} | {fmt(r['peak_gflops'])} | "
                      f"{fmt(r['achieved_gflops'])} | {pct(r['mfu'])} | {pct(r.get('mfu_cpu_time'))} | {r['threads']} | {loads.get(key) or '?'} |")
        if tm and tt:
            same = tm["shape"] == {k: tt["shape"].get(k) for k in tm["shape"]} or all(tm["shape"][k] == tt["shape"][k] for k in ("hidden", "layers", "heads", "ffn", "vocab", "batch", "seq", "parameters"))
            ratio = tm["tokens_per_second"] / tt["tokens_per_second"]
            result["train_ratio_mellama_over_torch"] = ratio
            md.append("")
            mfu_target = "GPU target ≥ 50% on the 13b-layers shape" if str(tm.get("device", "")).startswith("cuda") else "CPU target ≥ 70%"
            md.append(f"**MeLlama / PyTorch tokens/s: {ratio:.2f}×** (target ≥ 1.0). MeLlama MFU {pct(tm['mfu'])} ({mfu_target}). "
                      f"Same shape and parameter count in both: {'yes' if same else 'NO'}. Loss after the timed steps: MeLlama {tm['losses'][-1]:.3f}, PyTorch {tt['losses'][-1]:.3f}.")
            if "phases" in tm:
                md.append("")
                md.append("MeLlama step phases, median wall / CPU seconds: " + ", ".join(
                    f"{k} {v:.3f}/{tm['phases']['cpu_seconds'][k]:.3f}" for k, v in tm["phases"]["wall_seconds"].items()))
        md.append("")
        md.append("FLOPs per token = 6·(matmul parameters, i.e. all but the input embedding and norm gains) + 12·layers·d·seq (PaLM appendix B), the same formula for both. "
                  f"MFU = achieved / best trial of {(tm or tt or {}).get('peak_before', {}).get('matmul_size', '?')}² matmuls timed in the same process before and after the steps. "
                  "MFU by CPU time = (FLOPs per CPU-second of the steps) / (matmul FLOPs per CPU-second): steadier than wall time when other work shares the machine; "
                  "exact with one thread, an understatement with several (threads waiting at a barrier count as busy).")
        md.append("")

    km, ks = result.get("tokenize_mellama"), result.get("tokenize_spm")
    skipped = result.get("skipped", {}) or {}
    if km or ks:
        md.append("## Tokenization (LLaMA-2 tokenizer.model, PubMedQA abstracts)")
        md.append("")
        md.append("| implementation | tokens/s, 1 thread | tokens/CPU-s, 1 thread | tokens/s, all threads | tokens per pass | load avg before |")
        md.append("|---|---:|---:|---:|---:|---|")
        if km:
            md.append(f"| MeLlama ({km['tokenizer']}) | {fmt(km['tokens_per_second_1_thread'])} | {fmt(km['tokens_per_cpu_second_1_thread'])} | "
                      f"{fmt(km['tokens_per_second_n_threads'])} ({km['threads']} thr) | {km['tokens_per_pass']:,} | {loads.get('tokenize_mellama') or '?'} |")
            md.append(f"| MeLlama, segment cache off | {fmt(km['tokens_per_second_1_thread_no_segment_cache'])} | | | | |")
        if ks:
            many = fmt(ks.get("tokens_per_second_n_threads")) + (f" ({ks['threads']} thr)" if "threads" in ks else " (n/a)")
            md.append(f"| SentencePiece {ks['version']} (python) | {fmt(ks['tokens_per_second_1_thread'])} | {fmt(ks['tokens_per_cpu_second_1_thread'])} | {many} | "
                      f"{ks['tokens_per_pass']:,} | {loads.get('tokenize_spm') or '?'} |")
        if km and ks:
            same = km["ids_sha256"] == ks["ids_sha256"]
            ratio = km["tokens_per_second_1_thread"] / ks["tokens_per_second_1_thread"]
            result["tokenize_ratio_1_thread"] = ratio
            md.append("")
            md.append(f"Identical ids (sha256 over all ids): **{'yes' if same else 'NO'}**. MeLlama / SentencePiece, 1 thread: **{ratio:.1f}×**.")
        pm = result.get("prepare_mellama")
        if pm:
            md.append("")
            md.append(f"`mellama prepare` end to end (read JSON, clean, NFC, dedup hash, tokenize, write shards) on the same file, {pm['threads']} threads: "
                      f"**{fmt(pm['tokens_per_second'])} tokens/s** (load avg before: {loads.get('prepare_mellama') or '?'}).")
        md.append("")
    elif "tokenize" in skipped:
        md.append(f"## Tokenization\n\nSkipped: {skipped['tokenize']}\n")

    disk, ck = result.get("disk"), result.get("checkpoint")
    if ck and disk:
        md.append(f"## Checkpoint I/O ({ck['shape']['parameters'] / 1e6:.1f}M params, fp32) against the disk (folder {disk['path']})")
        md.append("")
        md.append(f"Disk, dd {disk['file_mb']} MB, best of {disk['repeats']}: write with fdatasync **{disk['write_gb_per_s']:.2f} GB/s**, "
                  f"read after dropping the file from the page cache **{disk['read_gb_per_s']:.2f} GB/s**, O_DIRECT read {disk['read_direct_gb_per_s']:.2f} GB/s "
                  f"(load avg before: {loads.get('disk') or '?'}).")
        md.append("")
        md.append("| operation | bytes | best GB/s | median GB/s | % of disk (best) |")
        md.append("|---|---:|---:|---:|---:|")
        rows = [("HF export save (HfCheckpoint.Save, fsync)", "hf_bytes", "hf_save", disk["write_gb_per_s"]),
                ("HF load, cold cache (HfCheckpoint.LoadModel)", "hf_bytes", "hf_load_cold", disk["read_gb_per_s"]),
                ("HF load, from page cache", "hf_bytes", "hf_load_page_cache", None),
                ("trainer checkpoint save (weights + AdamW, fsync, xxh128 manifest)", "trainer_bytes", "trainer_save", disk["write_gb_per_s"]),
                ("trainer resume right after the save, cold (checksum check + verified load into the saving engine)", "trainer_bytes", "trainer_check_and_load_cold", disk["read_gb_per_s"]),
                ("trainer verified load again, cold (same engine)", "trainer_bytes", "trainer_load_cold", disk["read_gb_per_s"]),
                ("trainer resume as after preemption, cold (check + new model and engine + verified load)", "trainer_bytes", "trainer_fresh_resume_cold", disk["read_gb_per_s"])]
        for label, bytes_key, key, ref in rows:
            if key not in ck: continue  # results of an older bench build
            r = ck[key]
            share = pct(r["best_gb_per_s"] / ref) if ref else "—"
            md.append(f"| {label} | {ck[bytes_key] / 1e9:.3f} GB | {r['best_gb_per_s']:.2f} | {r['median_gb_per_s']:.2f} | {share} |")
        md.append(f"\nLoad avg before: {loads.get('checkpoint') or '?'}. Target: ≥ 70% of the disk's bandwidth.\n")

    gm, gt = result.get("generate_mellama"), result.get("generate_torch")
    if gm:
        md.append(f"## Generation (greedy, KV cache, fp32, same shape, random weights; {gm['prompt_tokens']}-token prompt, {gm['new_tokens']} new tokens)")
        md.append("")
        md.append("| implementation | tokens/s (prefill + decode) | decode tokens/s | load avg before |")
        md.append("|---|---:|---:|---|")
        md.append(f"| {gm['impl']} | {fmt(gm['tokens_per_second'])} | {fmt(gm['decode_tokens_per_second'])} | {loads.get('generate_mellama') or '?'} |")
        if gt:
            md.append(f"| {gt['framework']} | {fmt(gt['tokens_per_second'])} | {fmt(gt['decode_tokens_per_second'])} | {loads.get('generate_torch') or '?'} |")
            result["generate_ratio_mellama_over_torch"] = gm["tokens_per_second"] / gt["tokens_per_second"]
            md.append(f"\nMeLlama / PyTorch: **{result['generate_ratio_mellama_over_torch']:.2f}×**.")
        md.append("")

    for part, reason in skipped.items():
        if part != "tokenize":
            md.append(f"## {part}\n\nSkipped: {reason}\n")

    text = "\n".join(md) + "\n"
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    with open(out_md, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
