"""Runs inside vLLM's own virtual environment (scripts/setup_vllm.sh), started by
bench/bench_vs_vllm.py: scores token-id sequences with ``prompt_logprobs`` and prints JSON.

Input (a JSON file): ``{"model": DIR, "dtype": "float32"|"bfloat16", "repeats": N,
"sequences": [{"ids": [...], "answer_start": K}, ...]}``. Output (stdout, last line): per
sequence the mean log-prob of the tokens from ``answer_start`` on (the RDS score's
log p(y|x) per token), the best wall time of the repeats (model load excluded) and the versions.
vLLM computes every prompt position's log-prob; automatic prefix caching shares the system prompt.
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: no fork of this script


def main(path: str) -> None:
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    job = json.load(open(path))
    seqs = job["sequences"]
    longest = max(len(s["ids"]) for s in seqs)
    t0 = time.perf_counter()
    llm = LLM(model=job["model"], dtype=job["dtype"], enable_prefix_caching=True, gpu_memory_utilization=job.get("memory", 0.2),
              max_model_len=max(256, longest + 8), seed=0)
    load = time.perf_counter() - t0
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    prompts = [TokensPrompt(prompt_token_ids=s["ids"]) for s in seqs]
    best, scores = float("inf"), None
    for _ in range(int(job.get("repeats", 2))):
        t = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        best = min(best, time.perf_counter() - t)
        scores = []
        for s, o in zip(seqs, outs):
            lp = o.prompt_logprobs
            vals = [lp[j][s["ids"][j]].logprob for j in range(s["answer_start"], len(s["ids"]))]
            scores.append(sum(vals) / len(vals))
    import torch
    import transformers

    print(json.dumps({"scores": scores, "seconds": best, "load_seconds": load, "vllm": vllm.__version__,
                      "torch": torch.__version__, "transformers": transformers.__version__}))


if __name__ == "__main__":
    main(sys.argv[1])
