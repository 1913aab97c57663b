"""A Hugging Face text-classification model as a refusal judge.

Any local sequence-classification model directory works (the published code used a Longformer
action classifier). The model's labels are mapped to ours with ``label_map``, given as
``"LABEL_0=compliance,LABEL_1=refusal"`` or a dict; several model labels may map to the same
label. Labels the mapping does not cover become ``unknown`` (counted, left out of rates). With
no mapping, model labels that already are one of ours (refusal / compliance / invalid) are used.
The classifier reads the response, or the (prompt, response) pair with ``pair=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sarft_core.errors import SarftError
from sarft_core.evaluation.judges.base import LABELS, UNKNOWN, Judge, ProgressFn


def parse_label_map(spec: str | dict | None) -> dict[str, str]:
    if not spec:
        return {}
    if isinstance(spec, dict):
        items = spec.items()
    else:
        items = []
        for part in str(spec).split(","):
            if "=" not in part:
                raise SarftError(f"bad label mapping entry {part!r}", "write --classifier-labels MODEL_LABEL=refusal,OTHER=compliance")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    out = {}
    for k, v in items:
        v = v.lower()
        if v not in LABELS:
            raise SarftError(f"label mapping sends {k!r} to {v!r}", f"map to one of {', '.join(LABELS)}")
        out[str(k)] = v
    return out


class ClassifierJudge(Judge):
    name = "classifier"

    def __init__(self, path: str | Path, label_map=None, device: str = "auto", pair: bool = False, batch_size: int = 16, max_length: int = 512):
        from sarft_core.models import pick_device

        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            raise SarftError(f"classifier model directory not found or has no config.json: {self.path}", "give a local Hugging Face text-classification model directory")
        self.label_map = parse_label_map(label_map)
        self.device = pick_device(device)
        self.pair = pair
        self.batch_size = batch_size
        self.max_length = max_length
        self._model = None
        self._tokenizer = None

    def describe(self) -> dict:
        return {"judge": self.name, "path": str(self.path), "label_map": self.label_map, "pair": self.pair}

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from sarft_core.models import checked_from_pretrained, loading, require_safetensors

            require_safetensors(Path(self.path), "classifier")
            with loading("classifier", self.path):
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.path))
                self._model = checked_from_pretrained(AutoModelForSequenceClassification, Path(self.path), "classifier",
                                                      use_safetensors=True).to(self.device).eval()
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            if self._model.config.pad_token_id is None:
                self._model.config.pad_token_id = self._tokenizer.pad_token_id
            names = set(self._model.config.id2label.values())
            if self.label_map and not set(self.label_map) & names:
                raise SarftError(
                    f"the label mapping names none of the classifier's labels ({', '.join(sorted(names))})",
                    "map the model's own label names with --classifier-labels",
                )
        return self._model, self._tokenizer

    def map_label(self, model_label: str) -> str:
        if self.label_map:
            return self.label_map.get(model_label, UNKNOWN)
        low = model_label.lower()
        return low if low in LABELS else UNKNOWN

    def judge(self, prompts: Sequence[str], responses: Sequence[str], progress: ProgressFn | None = None) -> list[str]:
        import torch

        model, tok = self._load()
        out: list[str] = []
        prompts, responses = list(prompts), list(responses)
        for start in range(0, len(responses), self.batch_size):
            rs = [r or "" for r in responses[start : start + self.batch_size]]
            if self.pair:
                ps = [p or "" for p in prompts[start : start + self.batch_size]]
                enc = tok(ps, rs, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            else:
                enc = tok(rs, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            with torch.no_grad():
                logits = model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            for idx in logits.argmax(dim=-1).tolist():
                out.append(self.map_label(model.config.id2label[int(idx)]))
            if progress is not None:
                progress(len(out), len(responses))
        return out


from sarft_core.evaluation.judges.base import register_judge  # noqa: E402


@register_judge("classifier", "any Hugging Face text-classification model directory, with a label mapping",
                options=("classifier_path", "classifier_labels", "classifier_pair", "device"), order=40)
def _build_classifier(options: dict) -> Judge:
    if not options.get("classifier_path"):
        raise SarftError("the classifier judge needs a model", "pass --classifier PATH (a Hugging Face text-classification model directory)")
    return ClassifierJudge(options["classifier_path"], label_map=options.get("classifier_labels"),
                           device=options.get("device") or "auto", pair=bool(options.get("classifier_pair")))
