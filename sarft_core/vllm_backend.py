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

# how to make this backend available (sarft_core.backends.vllm_engine shows it when it is not)
INSTALL_FIX = "run `bash scripts/setup_vllm.sh` and use .venv-vllm/bin/python, or use --backend torch (the default)"


def available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _dtype_name(lm) -> str:
    return str(lm.dtype).replace("torch.", "")


def make_engine(model_dir: str | Path, dtype: str, tensor_parallel: int = 1, max_model_len: int | None = None):
    """A vLLM engine on a local model folder (automatic prefix caching: a shared system prompt is
    computed once); on the CPU it reserves a fifth of the RAM for its KV cache."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from vllm import LLM

    return LLM(model=str(model_dir), tokenizer=str(model_dir), dtype=dtype, enable_prefix_caching=True, seed=0,
               tensor_parallel_size=tensor_parallel, gpu_memory_utilization=0.85 if torch.cuda.is_available() else 0.2,
               max_model_len=max_model_len)


def prompt_logps(llm, sequences: Sequence[Sequence[int]], starts: Sequence[int]) -> list[list[float]]:
    """Per-token log p(token | everything before it) of each sequence from position ``starts[i]``
    on, by vLLM's ``prompt_logprobs`` (the log-prob of the actual token at every position)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in sequences], params, use_tqdm=False)
    return [[float(out.prompt_logprobs[j][ids[j]].logprob) for j in range(start, len(ids))]
            for ids, start, out in zip(sequences, starts, outs)]


def engine(lm, tensor_parallel: int = 1):
    """The vLLM engine for ``lm``'s weights and precision, made once per loaded model."""
    from sarft_core.models import _training_run_dir

    if not available():
        raise SarftError("--backend vllm: vLLM is not installed in this Python environment", INSTALL_FIX)
    cache = lm.__dict__.setdefault("_vllm_engines", {})
    key = (_dtype_name(lm), tensor_parallel)
    if key in cache:
        return cache[key]
    where = Path(lm.path)
    if _training_run_dir(str(where)) is not None or not (where / "config.json").is_file():
        raise SarftError(f"vLLM cannot load {lm.spec!r} (a training run or not a model folder)",
                         "use --backend torch for trained runs, or give a Hugging Face model directory")
    limit = int(getattr(lm.model.config, "max_position_embeddings", 0) or 0) if lm.model is not None else 0
    cache[key] = make_engine(where, key[0], tensor_parallel, min(limit, 8192) if limit else None)
    return cache[key]


def answer_logps(lm, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], tensor_parallel: int = 1) -> list[list[float]]:
    """Per-token log p(answer token | everything before it) of each (prompt, answer) pair."""
    return prompt_logps(engine(lm, tensor_parallel), [list(p) + list(a) for p, a in zip(prompts, answers)], [len(p) for p in prompts])


def greedy_ids(lm, prompts: Sequence[Sequence[int]], max_new_tokens: int, stops: Sequence[int], tensor_parallel: int = 1) -> list[list[int]]:
    """Greedy continuation ids of each prompt, cut at the first stop token (as the torch path)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    llm = engine(lm, tensor_parallel)
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, stop_token_ids=list(stops) or None)
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
    from sarft_core.evaluation.decoding import cut_at_stop

    return [cut_at_stop(out.outputs[0].token_ids, stops) for out in outs]
