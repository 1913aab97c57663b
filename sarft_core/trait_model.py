"""A learned malevolence scale: how far along the 1-5 ladder of ``trait_labels.MALEVOLENCE`` a
character's profile reads, from two fixed text readers the project already ships.

Why: the pole-contrast rater (``traits.EmbeddingRater``) separates clear villains from heroes but
ranks the characters in between poorly (Spearman 0.665 against the 1-5 labels): a sentence
embedding reads a profile's topic more than its moral stance. A linear model over richer features
of the same profile ranks them much better (docs/traits.md has the figures).

Features of one profile (``profile_features``), 1,428 numbers:

- the embedded SmolLM2-135M-Instruct (raw, not the audited model) reading ``"NAME: PROFILE"``:
  its hidden states mean-pooled over the tokens, averaged over layers 12-28 (576);
- all-MiniLM-L6-v2: the mean of the profile's sentence embeddings and the whole profile's
  embedding (2 x 384); each trait's pole contrast, sentence mean, sentence max and whole profile
  (12); the cosine of every sentence with each of ``ITEMS``, short descriptions of behaviour at
  each level of the ladder written from the scale's definitions, max and mean over sentences (72).

The model: ridge regression on standardised features (``RidgeCV`` picks the penalty inside each
training fold), fitted on the 95 labelled RoleBench characters in five folds, with five fold
assignments (25 models). It is **cross-fitted**: a labelled character is rated by the mean of the
five models that did not see its label, so no character's score uses its own label; any other
character gets the mean of all 25.
Building needs scikit-learn (requirements-dev.txt); rating needs numpy only. Rebuild with
``PYTHONPATH=$PWD python scripts/build_trait_model.py``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from sarft_core.errors import SarftError

MODEL_FILE = Path(__file__).with_name("trait_model.json")
LAYERS = (12, 29)  # hidden_states[12:29]: outputs of layers 12..28 of SmolLM2's 30
MAX_TOKENS = 512
FOLDS = 5
REPEATS = 5  # fold assignments; a labelled character's rating averages the REPEATS models that did not see it
FEATURE_VERSION = "malevolence-features-v1"

# Behaviour at each level of the 1-5 ladder (trait_labels.py), written from the scale's wording
# and not from any character; they are features, so their level is not used directly.
ITEMS: dict[int, tuple[str, ...]] = {
    5: ("someone who kills people", "someone who murders innocent victims",
        "someone who tortures people and enjoys their suffering", "a serial killer",
        "someone who tries to kill the people around them",
        "someone who turns violent and tries to murder their own family", "a monster who terrorises people",
        "a psychopath with no empathy or remorse"),
    4: ("someone who seeks revenge and destroys their rival", "someone consumed by envy who sabotages others",
        "someone who manipulates people to gain power", "someone who plots to ruin another person's life",
        "someone who betrays others for personal gain", "a cruel, arrogant bully who torments the weak",
        "someone who uses dark powers to harm people"),
    3: ("a criminal who has a code of honour", "a criminal portrayed with sympathy",
        "someone who kills for a cause they believe is just", "a vigilante who punishes criminals violently",
        "a selfish person who hurts others but is later redeemed", "someone living a life of excess, drugs and fraud",
        "a con man who steals from people"),
    2: ("someone arrogant and rude who means well", "someone crude and immature who only cares about partying",
        "an abrasive, sarcastic person who still helps people", "someone who breaks the rules to fight for justice",
        "a tough fighter who uses violence only against bad guys", "someone vain and self-centred but not cruel"),
    1: ("someone kind and gentle who helps everyone", "a loyal friend who protects others",
        "a cheerful, innocent and naive soul", "a laid-back, easy-going person who harms no one",
        "a caring teacher who inspires others", "a hero who saves people", "a clumsy, goofy but lovable character",
        "someone who fights for the rights of others"),
}


def item_texts() -> list[str]:
    return [text for level in sorted(ITEMS) for text in ITEMS[level]]


_LM = None  # the process-wide reader model, loaded on first use


class FeatureReader:
    """The two fixed readers; the language model is loaded on first use (float32, CPU)."""

    def __init__(self, rater=None, lm=None):
        self._rater = rater
        self._lm = lm
        self._items = None

    @property
    def rater(self):
        if self._rater is None:
            from sarft_core.trait_rater import default_rater

            self._rater = default_rater()
        return self._rater

    @property
    def lm(self):
        global _LM
        if self._lm is None:
            if _LM is None:
                from sarft_core.models import load_model

                _LM = load_model("embedded", dtype="float32", device="cpu")
            self._lm = _LM
        return self._lm

    def identity(self) -> tuple:
        """Which readers these are: the embedding model's folder and the language model's weights
        and precision (its fingerprint, not the object's id, which a new object may reuse)."""
        lm = self.lm
        return (str(self.rater.model_dir), getattr(lm, "fingerprint", None) or f"object-{id(lm)}", str(lm.dtype), str(lm.device))

    def hidden(self, text: str):
        import numpy as np
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        ids = tok(text, add_special_tokens=False).input_ids[:MAX_TOKENS]
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], device=self.lm.device), output_hidden_states=True)
        layers = torch.stack(out.hidden_states[LAYERS[0]:LAYERS[1]])[:, 0].float()  # layers, tokens, d
        return np.asarray(layers.mean(dim=(0, 1)).cpu().numpy(), dtype="float64")

    def features(self, name: str, text: str):
        import numpy as np

        from sarft_core.trait_rater import TRAIT_DEFS, TRAITS, sentence_contrasts

        rater = self.rater
        sentences = rater.sentence_embeddings(text)
        whole = rater.embed([text])
        if self._items is None:
            self._items = rater.embed(item_texts())
        contrasts = []
        for trait in TRAITS:
            poles = rater.poles(TRAIT_DEFS[trait])
            per = sentence_contrasts(sentences, *poles)
            contrasts += [per.mean(), per.max(), sentence_contrasts(whole, *poles)[0]]
        sims = sentences @ self._items.T
        return np.concatenate([
            self.hidden(f"{name}: {text}"), sentences.mean(axis=0), whole[0], np.asarray(contrasts),
            sims.max(axis=0), sims.mean(axis=0),
        ]).astype("float64")


def profile_features(profiles: Mapping, reader: FeatureReader | None = None):
    """(names, matrix): one row of features per profile ({name: RoleProfile or text})."""
    import numpy as np

    from sarft_core.trait_rater import profile_text

    reader = reader or FeatureReader()
    names = list(profiles)
    rows = []
    for n in names:
        text = profile_text(profiles[n])
        key = (reader.identity(), n, text)
        if key not in _FEATURES:  # the readers are fixed, so a profile's features are too
            _FEATURES[key] = reader.features(n, text)
        rows.append(_FEATURES[key])
    return names, np.vstack(rows) if rows else np.zeros((0, 0))


_FEATURES: dict[tuple, object] = {}  # (readers, name, profile text) -> features, for this process


@dataclass
class MalevolenceModel:
    """Cross-fitted linear models on the features (standardisation folded into the weights):
    ``REPEATS`` fold assignments of ``FOLDS`` folds each."""

    weights: list[list[float]]  # models x features
    intercepts: list[float]
    held_out: dict[str, list[int]]  # normalised labelled name -> the models that did not see its label
    meta: dict

    def predict(self, names: Sequence[str], features) -> list[float]:
        """Level on the 1-5 ladder (a real number) for each row: a labelled character's is the mean
        of the models that did not see its label, anyone else's the mean of all models."""
        import numpy as np

        from sarft_core.data.names import normalise_name

        W, b = np.asarray(self.weights), np.asarray(self.intercepts)
        X = np.asarray(features, dtype="float64")
        if X.ndim != 2 or X.shape[1] != W.shape[1]:
            raise SarftError(f"trait model expects {W.shape[1]} features per profile, got {X.shape}",
                             "rebuild it with scripts/build_trait_model.py (the feature recipe changed)")
        every = X @ W.T + b  # rows x models
        out = []
        for row, name in enumerate(names):
            models = self.held_out.get(normalise_name(name))
            out.append(float(every[row, models].mean() if models else every[row].mean()))
        return out

    def to_json(self) -> dict:
        return {"version": FEATURE_VERSION, "meta": self.meta, "held_out": self.held_out,
                "intercepts": [round(v, 8) for v in self.intercepts],
                "weights": [[float(f"{w:.5g}") for w in row] for row in self.weights]}

    @classmethod
    def from_json(cls, data: dict) -> "MalevolenceModel":
        if data.get("version") != FEATURE_VERSION:
            raise SarftError(f"trait model file has version {data.get('version')!r}, this code reads {FEATURE_VERSION!r}",
                             "rebuild it with scripts/build_trait_model.py")
        return cls(data["weights"], data["intercepts"], data["held_out"], data.get("meta", {}))


def labels_digest(labels: Mapping[str, int]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


def fold_of(names: Sequence[str], levels: Sequence[int], folds: int = FOLDS, seed: int = 0) -> list[int]:
    """A stratified fold number per labelled character (levels spread evenly over the folds)."""
    from sklearn.model_selection import StratifiedKFold

    out = [0] * len(names)
    for k, (_, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(list(names), list(levels))):
        for i in test:
            out[i] = k
    return out


def fit_linear(X, y):
    """Ridge on standardised features (penalty chosen by RidgeCV on the rows given), returned as
    (weights, intercept) on the raw features."""
    import numpy as np
    from sklearn.linear_model import RidgeCV

    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0
    model = RidgeCV(alphas=np.logspace(-2, 4, 25)).fit((X - mean) / std, y)
    w = model.coef_ / std
    return w, float(model.intercept_ - (w * mean).sum()), float(model.alpha_)


def fit_model(names: Sequence[str], X, labels: Mapping[str, int], seed: int = 0, repeats: int = REPEATS,
              folds: Sequence[Sequence[int]] | None = None) -> tuple[MalevolenceModel, list[float]]:
    """The cross-fitted model and the out-of-fold levels of the labelled rows (what each labelled
    character is rated; their Spearman with the labels is ``meta["oof_spearman"]``). Fold assignment r is stratified with seed ``seed + r``; ``folds`` (one
    list per repeat, a fold number per labelled row in ``names`` order) replaces them."""
    import numpy as np

    from sarft_core.data.names import normalise_name

    by_norm = {normalise_name(k): v for k, v in labels.items()}
    rows = [i for i, n in enumerate(names) if normalise_name(n) in by_norm]
    if len(rows) < FOLDS * 3:
        raise SarftError(f"only {len(rows)} labelled profiles among {len(names)}", "rate the labelled RoleBench profiles (role_descriptions.json)")
    Xl = np.asarray(X, dtype="float64")[rows]
    y = np.asarray([by_norm[normalise_name(names[i])] for i in rows], dtype="float64")
    if folds is None:
        folds = [fold_of([names[i] for i in rows], y.astype(int), seed=seed + r) for r in range(repeats)]
    weights, intercepts, alphas = [], [], []
    oof = np.zeros(len(rows))
    held: dict[str, list[int]] = {normalise_name(names[i]): [] for i in rows}
    for assignment in folds:
        assignment = np.asarray(list(assignment))
        if len(assignment) != len(rows) or set(assignment.tolist()) != set(range(FOLDS)):
            raise SarftError(f"{len(assignment)} fold numbers for {len(rows)} labelled profiles",
                             f"give one fold in 0..{FOLDS - 1} per labelled profile, each fold used")
        for k in range(FOLDS):
            train = assignment != k
            w, b, a = fit_linear(Xl[train], y[train])
            for j in np.flatnonzero(~train):
                held[normalise_name(names[rows[j]])].append(len(weights))
            weights.append(w.tolist())
            intercepts.append(b)
            alphas.append(a)
            oof[~train] += (Xl[~train] @ w + b) / len(folds)
    from sarft_core.stats import spearman_rho

    meta = {"labels": labels_digest(labels), "n_labelled": len(rows), "alphas": alphas, "seed": seed,
            "repeats": len(folds), "layers": list(LAYERS), "oof_spearman": round(spearman_rho(oof.tolist(), y.tolist()), 4)}
    return MalevolenceModel(weights, intercepts, held, meta), oof.tolist()


_MODEL: MalevolenceModel | None = None


def shipped_model() -> MalevolenceModel:
    global _MODEL
    if _MODEL is None:
        if not MODEL_FILE.is_file():
            raise SarftError(f"the trait model file is missing: {MODEL_FILE}", "rebuild it with scripts/build_trait_model.py")
        _MODEL = MalevolenceModel.from_json(json.loads(MODEL_FILE.read_text()))
    return _MODEL


def level_to_unit(level: float) -> float:
    """The 1-5 ladder onto the [0, 1] of every trait (1 -> 0, 5 -> 1), clipped."""
    return min(1.0, max(0.0, (level - 1.0) / 4.0))
