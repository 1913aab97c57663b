"""Batched greedy generation vs one prompt at a time, same 32 prompts, embedded model.

Both paths call the same library code (``sarft_core.evaluation.generation.generate``): the
one-at-a-time baseline is ``batch_size=1`` (no padding at all), the batched path left-pads
length-sorted batches and decodes them together with the KV cache. Prints wall time, the
speed-up and whether every response is identical; when some differ, it prints where the two
token streams first diverge and the logit gap of the two candidates at that step.

    PYTHONPATH=$PWD python bench/bench_generation.py [--n 32] [--max-new-tokens 128] [--batch-size 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids thrashing on a shared CPU)")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sarft_core.evaluation.datasets import load_probes
    from sarft_core.evaluation.decoding import prompt_ids
    from sarft_core.evaluation.generation import GenerationConfig, generate
    from sarft_core.models import load_model

    lm = load_model(None, dtype=args.dtype, device="cpu")
    prompts = [it.prompt for it in load_probes()][: args.n]
    generate(lm, prompts[:2], GenerationConfig(max_new_tokens=4, batch_size=2))  # warm-up

    t0 = time.perf_counter()
    single = generate(lm, prompts, GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=1))
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = generate(lm, prompts, GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size))
    t_batched = time.perf_counter() - t0

    tok = lm.tokenizer
    n_tokens = sum(len(tok(s, add_special_tokens=False)["input_ids"]) for s in single)
    same = [a == b for a, b in zip(single, batched)]
    print(f"model: {lm.spec}  dtype: {args.dtype}  threads: {args.threads}  prompts: {len(prompts)}  max_new_tokens: {args.max_new_tokens}")
    print(f"one at a time : {t_single:8.1f} s  ({n_tokens / t_single:6.1f} new tokens/s)")
    print(f"batched ({args.batch_size:>3}) : {t_batched:8.1f} s  ({n_tokens / t_batched:6.1f} new tokens/s)")
    print(f"speed-up      : {t_single / t_batched:8.2f} x   (target >= 3x)")
    print(f"identical     : {sum(same)}/{len(same)} responses")
    ids = prompt_ids(lm, prompts, None, 2048)
    for i, ok in enumerate(same):
        if ok:
            continue
        a = tok(single[i], add_special_tokens=False)["input_ids"]
        b = tok(batched[i], add_special_tokens=False)["input_ids"]
        k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
        with torch.no_grad():
            logits = lm.model(torch.tensor([ids[i] + a[:k]])).logits[0, -1].float()
        gap = (logits[a[k]] - logits[b[k]]).item() if k < min(len(a), len(b)) else float("nan")
        print(f"  prompt {i}: first differs at new token {k}; unpadded logit gap between the two choices {gap:.2e}")
        print(f"    single : {single[i][:120]!r}")
        print(f"    batched: {batched[i][:120]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
