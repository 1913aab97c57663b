"""Runs inside vLLM's own virtual environment (scripts/setup_vllm.sh), started by
bench/bench_vs_vllm.py: scores token-id sequences with ``prompt_logprobs`` and prints JSON.

It runs :mod:`sarft_core.vllm_backend`'s own engine and ``prompt_logps`` (the venv has the
project installed), so the benchmark times what ``--backend vllm`` runs.

Input (a JSON file): ``{"model": DIR, "dtype": "float32"|"bfloat16", "repeats": N,
"sequences": [{"ids": [...], "answer_start": K}, ...]}``. Output (stdout, last line): per
sequence the mean log-prob of the tokens from ``answer_start`` on (the RDS score's
log p(y|x) per token), the best wall time of the repeats (model load excluded) and the versions.
"""
from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: no fork of this script


def main(path: str) -> None:
    import torch
    import transformers
    import vllm

    from sarft_core.vllm_backend import make_engine, prompt_logps  # the backend's own code, timed as it runs there

    job = json.load(open(path))
    seqs = job["sequences"]
    ids, starts = [s["ids"] for s in seqs], [s["answer_start"] for s in seqs]
    t0 = time.perf_counter()
    llm = make_engine(job["model"], job["dtype"], max_model_len=max(256, max(len(i) for i in ids) + 8))
    load = time.perf_counter() - t0
    best, scores = float("inf"), None
    for _ in range(int(job.get("repeats", 2))):
        t = time.perf_counter()
        logps = prompt_logps(llm, ids, starts)
        best = min(best, time.perf_counter() - t)
        scores = [sum(v) / len(v) for v in logps]
    print(json.dumps({"scores": scores, "seconds": best, "load_seconds": load, "vllm": vllm.__version__,
                      "torch": torch.__version__, "transformers": transformers.__version__}))


if __name__ == "__main__":
    main(sys.argv[1])
