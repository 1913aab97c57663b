"""The default backend: this project's engine (model.generate for generation, the RDS engine's
batched, prefix-cached pass for log-probs)."""
from __future__ import annotations

from sarft_core.backends.base import Backend, register


class TorchBackend(Backend):
    name = "torch"
    description = "this project's engine (PyTorch)"
    checks_memory = True

    def available(self) -> bool:
        return True

    def greedy_ids(self, lm, prompts, max_new_tokens, stops, tensor_parallel=1):
        from sarft_core.evaluation.decoding import greedy_ids

        return greedy_ids(lm, prompts, max_new_tokens)  # stops: the model's own, read by greedy_ids

    def answer_logps(self, lm, prompts, answers, tensor_parallel=1, max_batch_tokens=4096, progress=None):
        from sarft_core.scoring.engine import score_pass

        tok = lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return score_pass(lm.model, prompts, answers, pad, max_batch_tokens, progress=progress).token_logps


register(TorchBackend())
