"""vLLM (sarft_core.vllm_backend): prompt_logprobs and greedy generation on the same token ids."""
from __future__ import annotations

from sarft_core import vllm_backend
from sarft_core.backends.base import Backend, register


class VllmBackend(Backend):
    name = "vllm"
    description = "vLLM"
    install_fix = vllm_backend.INSTALL_FIX

    def available(self) -> bool:
        return vllm_backend.available()

    def greedy_ids(self, lm, prompts, max_new_tokens, stops, tensor_parallel=1):
        return vllm_backend.greedy_ids(lm, prompts, max_new_tokens, stops, tensor_parallel)

    def answer_logps(self, lm, prompts, answers, tensor_parallel=1, max_batch_tokens=4096, progress=None):
        out = vllm_backend.answer_logps(lm, prompts, answers, tensor_parallel)
        if progress is not None:
            progress(len(out), len(out))
        return out


register(VllmBackend())
