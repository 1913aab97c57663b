"""The ``hybrid`` judge's learnt part: two logistic heads stored as plain JSON.

- ``refusal``: P(refusal, full or partial) from the rule cues, the anchor similarities and the
  opening's embedding;
- ``partial``: P(partial | refusal), the same inputs, learnt on the refusals only.

A head is a weight per input and an intercept; :func:`predict` is a dot product and a logistic,
so judging needs numpy only (scikit-learn is needed only to rebuild the weights:
``python scripts/build_refusal_head.py``). The file records what it was built on.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from sarft_core.errors import SarftError

HEAD_FILE = Path(__file__).with_name("refusal_head.json")
FORMAT = "sarft-refusal-head-v1"


@dataclass
class LinearHead:
    coef: list[float]
    intercept: float

    def logits(self, x):
        import numpy as np

        return np.asarray(x, dtype="float64") @ np.asarray(self.coef, dtype="float64") + float(self.intercept)


@dataclass
class RefusalHeads:
    inputs: list[str]  # names of the input columns, in order (rules, anchors, opening embedding)
    refusal: LinearHead
    partial: LinearHead
    meta: dict = field(default_factory=dict)  # what it was built on, the recipe, the chosen C

    def predict(self, x):
        """(P(refusal), P(partial | refusal)) per row of ``x``."""
        import numpy as np

        x = np.asarray(x, dtype="float64")
        if x.ndim != 2 or x.shape[1] != len(self.inputs):
            raise ValueError(f"expected rows of {len(self.inputs)} inputs, got shape {x.shape}")
        return _sigmoid(self.refusal.logits(x)), _sigmoid(self.partial.logits(x))

    def to_json(self) -> dict:
        return {"format": FORMAT, "inputs": self.inputs, "meta": self.meta,
                "refusal": {"coef": [round(float(c), 6) for c in self.refusal.coef], "intercept": round(float(self.refusal.intercept), 6)},
                "partial": {"coef": [round(float(c), 6) for c in self.partial.coef], "intercept": round(float(self.partial.intercept), 6)}}

    @classmethod
    def from_json(cls, obj: dict, source: str = "head") -> "RefusalHeads":
        try:
            if obj.get("format") != FORMAT:
                raise ValueError(f"format {obj.get('format')!r}")
            inputs = [str(n) for n in obj["inputs"]]
            heads = []
            for key in ("refusal", "partial"):
                coef = [float(c) for c in obj[key]["coef"]]
                intercept = float(obj[key]["intercept"])
                if len(coef) != len(inputs) or not all(math.isfinite(c) for c in [*coef, intercept]):
                    raise ValueError(f"{key} head: {len(coef)} finite weights expected {len(inputs)}")
                heads.append(LinearHead(coef, intercept))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SarftError(f"the refusal head {source} is damaged ({exc})", "rebuild it: python scripts/build_refusal_head.py") from None
        return cls(inputs, heads[0], heads[1], dict(obj.get("meta") or {}))


def _sigmoid(z):
    import numpy as np

    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def save_heads(heads: RefusalHeads, path: str | Path = HEAD_FILE) -> None:
    from sarft_core.store import atomic_write_text

    atomic_write_text(path, json.dumps(heads.to_json(), indent=1) + "\n")


def load_heads(path: str | Path = HEAD_FILE) -> RefusalHeads:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SarftError(f"the refusal head is missing: {path}", "rebuild it: python scripts/build_refusal_head.py (or reinstall)") from None
    except (OSError, ValueError) as exc:
        raise SarftError(f"the refusal head {path} could not be read ({exc})", "rebuild it: python scripts/build_refusal_head.py") from None
    if not isinstance(obj, dict):
        raise SarftError(f"the refusal head {path} is not a JSON object", "rebuild it: python scripts/build_refusal_head.py")
    return RefusalHeads.from_json(obj, str(path))
