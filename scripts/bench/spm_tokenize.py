#!/usr/bin/python3
"""SentencePiece reference for scripts/bench/run.sh: tokens/s of the sentencepiece library (Debian
python3-sentencepiece) on the PubMedQA abstracts, fed exactly as MeLlamaBench tokenize feeds MeLlama's
tokenizer (each record's CONTEXTS joined by one space, no BOS/EOS). The sha256 over all ids (int32 little-endian)
lets run.sh check both produced the same ids."""
import argparse, hashlib, json, os, struct, sys, time

import sentencepiece as spm


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out")
    a = p.parse_args()
    with open(a.corpus, encoding="utf-8") as f:
        records = json.load(f)
    texts = [" ".join(r["CONTEXTS"]) for r in records.values()]
    t0 = time.perf_counter()
    sp = spm.SentencePieceProcessor(model_file=a.tokenizer)
    load = time.perf_counter() - t0

    ids = [sp.encode(t) for t in texts]  # also the warm-up pass
    digest = hashlib.sha256()
    for row in ids:
        digest.update(struct.pack(f"<{len(row)}i", *row))
    tokens_per_pass = sum(len(r) for r in ids)

    def measure(encode_pass):
        encode_pass()
        tokens, c0, t0 = 0, time.process_time(), time.perf_counter()
        while True:
            tokens += encode_pass()
            if time.perf_counter() - t0 >= a.seconds:
                break
        return tokens / (time.perf_counter() - t0), tokens / max(1e-9, time.process_time() - c0)

    # One call per text, and one call for the whole list (less Python overhead); the faster is reported.
    one, one_cpu = max(measure(lambda: sum(len(sp.encode(t)) for t in texts)),
                       measure(lambda: sum(len(r) for r in sp.encode(texts))))
    print(f"[spm-bench] sentencepiece {spm.__version__} 1 thread: {one / 1e6:.3f} M tok/s", file=sys.stderr)
    result = {
        "impl": "sentencepiece", "version": spm.__version__, "load_seconds": load, "documents": len(texts),
        "chars": sum(len(t) for t in texts), "tokens_per_pass": tokens_per_pass, "ids_sha256": digest.hexdigest(),
        "tokens_per_second_1_thread": one, "tokens_per_cpu_second_1_thread": one_cpu,
    }
    # Batch encoding on several threads exists in newer sentencepiece releases only (num_threads).
    try:
        sp.encode(texts[:2], num_threads=a.threads)
        many, _ = measure(lambda: sum(len(r) for r in sp.encode(texts, num_threads=a.threads)))
        result["threads"] = a.threads
        result["tokens_per_second_n_threads"] = many
        print(f"[spm-bench] {a.threads} threads: {many / 1e6:.3f} M tok/s", file=sys.stderr)
    except TypeError:
        result["n_threads_note"] = f"sentencepiece {spm.__version__} has no multi-threaded batch encode (num_threads)"
    text = json.dumps(result, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
