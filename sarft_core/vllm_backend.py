"""An optional vLLM backend for RDS scoring (``prompt_logprobs``) and greedy generation.

Used with ``--backend vllm`` where vLLM is installed (``bash scripts/setup_vllm.sh`` makes a venv
with its CPU build; on GPUs install ``vllm`` itself): above all for big models on GPUs (tensor
parallelism with ``--tensor-parallel N``, generation throughput far beyond ``model.generate``).
The default backend stays ours (``torch``). Both backends are fed the same token ids, built by
:func:`sarft_core.chat.encode`, so their rows differ only by the precision used.

vLLM loads the weights itself from the model's local directory (a Hugging Face folder with
safetensors; the embedded models' cached directories qualify). A training run's LoRA adapter is
merged in memory by our loader only, so vLLM cannot read a run directory: score or evaluate it
with the torch backend.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Sequence

from sarft_core.errors import SarftError

BACKENDS = ("torch", "vllm")


def available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def check_backend(name: str) -> None:
    """The one validation of ``--backend``: a known name, and vLLM importable when asked for."""
    if name not in BACKENDS:
        raise SarftError(f"unknown backend {name!r}", f"use one of {', '.join(BACKENDS)}")
    if name == "vllm" and not available():
        raise SarftError("--backend vllm: vLLM is not installed in this Python environment",
                         "run `bash scripts/setup_vllm.sh` and use .venv-vllm/bin/python, or use --backend torch (the default)")


def _dtype_name(lm) -> str:
    return str(lm.dtype).replace("torch.", "")


def engine(lm, tensor_parallel: int = 1):
    """The vLLM engine for ``lm``'s weights and precision, made once per loaded model."""
    check_backend("vllm")
    cache = lm.__dict__.setdefault("_vllm_engines", {})
    key = (_dtype_name(lm), tensor_parallel)
    if key in cache:
        return cache[key]
    where = Path(lm.path)
    if (where / "status.json").is_file() or not (where / "config.json").is_file():
        raise SarftError(f"vLLM cannot load {lm.spec!r} (a training run or not a model folder)",
                         "use --backend torch for trained runs, or give a Hugging Face model directory")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from vllm import LLM

    on_gpu = torch.cuda.is_available()
    limit = int(getattr(lm.model.config, "max_position_embeddings", 0) or 0) if lm.model is not None else 0
    cache[key] = LLM(model=str(where), tokenizer=str(where), dtype=key[0], enable_prefix_caching=True, seed=0,
                     tensor_parallel_size=tensor_parallel, gpu_memory_utilization=0.85 if on_gpu else 0.2,
                     max_model_len=min(limit, 8192) if limit else None)
    return cache[key]


def answer_logps(lm, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], tensor_parallel: int = 1) -> list[list[float]]:
    """Per-token log p(answer token | everything before it) of each (prompt, answer) pair."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = engine(lm, tensor_parallel)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p) + list(a)) for p, a in zip(prompts, answers)], params, use_tqdm=False)
    result = []
    for p, a, out in zip(prompts, answers, outs):
        ids = list(p) + list(a)
        lps = out.prompt_logprobs
        result.append([float(lps[j][ids[j]].logprob) for j in range(len(p), len(ids))])
    return result


def greedy_ids(lm, prompts: Sequence[Sequence[int]], max_new_tokens: int, stops: Sequence[int], tensor_parallel: int = 1) -> list[list[int]]:
    """Greedy continuation ids of each prompt, cut at the first stop token (as the torch path)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = engine(lm, tensor_parallel)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=list(stops) or None)
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
    from sarft_core.evaluation.generation import cut_at_stop

    return [cut_at_stop(out.outputs[0].token_ids, stops) for out in outs]
