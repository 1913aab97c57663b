"""The offline trait rater: the four traits, their anchor sentences, and the sentence-embedding
rater that scores a profile's text against them (engines layer: :mod:`sarft_core.traits` rates
profiles from any source with it, :mod:`sarft_core.trait_model` learns the malevolence scale on
its features)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

TRAITS = ("malevolence", "aggression", "deceptiveness", "benevolence")


@dataclass(frozen=True)
class Trait:
    name: str
    meaning: str  # what 1.0 means, in one line (shown in docs and to the LLM rater)
    low: str  # what 0.0 means
    high_poles: tuple[str, ...]  # descriptions of a character with much of the trait
    low_poles: tuple[str, ...]  # descriptions of a character with little of it


# The poles are short third-person portraits. Second-person poles ("You are ...") were tried and
# measured worse: every profile sentence starts that way, so the form, not the content, matched.
TRAIT_DEFS: dict[str, Trait] = {
    "malevolence": Trait(
        "malevolence",
        "a villain: wishes harm on others and acts on it, with cruelty and without remorse",
        "a good person who means no harm and acts for the good of others",
        (
            "a villain who is evil, cruel and malicious and deliberately harms innocent people",
            "a sadistic murderer who enjoys torturing and killing victims",
            "a ruthless, manipulative antagonist driven by malice and a lust for power",
            "a menacing monster who spreads fear, terror and suffering",
        ),
        (
            "a kind, warm and compassionate hero who helps and protects others",
            "a gentle, good-hearted person who cares deeply about people",
            "a friendly, cheerful character with a big heart",
            "a wise, honest and inspiring mentor who brings out the best in others",
        ),
    ),
    "aggression": Trait(
        "aggression",
        "hostile and violent: threatens, attacks, fights and loses their temper",
        "calm and peaceful: never threatens or attacks anyone",
        (
            "a violent, hot-tempered person who attacks anyone who crosses them",
            "a brutal fighter who threatens, intimidates and hurts people",
            "a hostile, combative character always looking for a fight",
            "someone who explodes with rage and lashes out with fists or weapons",
        ),
        (
            "a calm, gentle and peaceful person who never raises their voice",
            "a patient, easy-going character who avoids conflict of any kind",
            "a mild-mannered, soft-spoken person who would never hurt anyone",
            "someone who settles disagreements with kindness and quiet conversation",
        ),
    ),
    "deceptiveness": Trait(
        "deceptiveness",
        "a liar and manipulator: deceives, cons, schemes and hides their true intentions",
        "honest and transparent: says what they mean and never tricks anyone",
        (
            "a cunning liar who deceives and manipulates everyone around them",
            "a con artist who tricks people and hides behind false identities",
            "a schemer who plots in secret, betrays those who trust them and hides their true intentions",
            "a master of disguise and deceit who plays mind games with people",
        ),
        (
            "an honest, sincere person who always tells the truth",
            "an open, straightforward character who says exactly what they mean",
            "a trustworthy, loyal friend who never tricks or betrays anyone",
            "someone transparent about their intentions who keeps their promises",
        ),
    ),
    "benevolence": Trait(
        "benevolence",
        "warm and caring: kind, generous, helps and protects others",
        "cold and callous: indifferent or hostile to others' well-being",
        (
            "a warm, kind and generous person who loves helping people",
            "a caring, compassionate protector of those weaker than them",
            "a selfless character devoted to the well-being of friends and community",
            "a gentle, nurturing soul who comforts people who are suffering",
        ),
        (
            "a cold, heartless person who feels nothing for others",
            "a callous character who is indifferent to other people's suffering",
            "a selfish, greedy person who uses people for their own gain",
            "a hateful, spiteful person who takes pleasure in others' misfortune",
        ),
    ),
}

# Sentences of RoleBench-style profiles that instruct the chat model rather than describe the
# character; they are the same for every role, so they are cut before rating.
_INSTRUCTION_MARKERS = (
    "now please answer some questions",
    "your speaking style should",
    "please do not expose that you are",
    "you must always remember that you are only assigned",
    "don't be verbose or too formal",
)
# "Your name is X." says nothing about the character and would be averaged in like a trait cue
_NAME_ONLY = re.compile(r"^(your name is|you are called|you are named)\s+[^.!?]{1,80}[.!?]$", re.IGNORECASE)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")
# temperature of the logistic that maps a raw cosine contrast to [0, 1] (see docs/traits.md)
DEFAULT_TEMPERATURE = 0.05


def profile_text(profile) -> str:
    """The character description to rate: the description if there is one, else the role prompt,
    without the generic instructions to the chat model."""
    text = (getattr(profile, "description", "") or getattr(profile, "role_prompt", "") or str(profile)).strip()
    keep = [
        s for s in split_sentences(text)
        if not any(m in s.casefold() for m in _INSTRUCTION_MARKERS) and not _NAME_ONLY.match(s)
    ]
    return " ".join(keep).strip() or text


def split_sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE_SPLIT.split(text.replace("\n", " "))]
    return [p for p in parts if len(p) > 3]


def logistic(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def contrast(sentence_emb, high_emb, low_emb) -> float:
    """Mean over sentences of (mean cosine to the high poles - mean cosine to the low poles).

    Embeddings are L2-normalised rows, so a dot product is a cosine. Averaging over sentences
    (rather than embedding the whole profile at once) keeps one long topical sentence from
    dominating, and measured better on RoleBench (bench/bench_traits.py).
    """
    return float(sentence_contrasts(sentence_emb, high_emb, low_emb).mean())


def sentence_contrasts(sentence_emb, high_emb, low_emb):
    """Per sentence (row): mean cosine to the high poles - mean cosine to the low poles."""
    import numpy as np

    s = np.asarray(sentence_emb)
    return (s @ np.asarray(high_emb).T).mean(axis=1) - (s @ np.asarray(low_emb).T).mean(axis=1)


# ---------------------------------------------------------------- default: sentence embeddings
class EmbeddingRater:
    """all-MiniLM-L6-v2 sentence embeddings (sarft_core.embeddings, shared with the hybrid judge)
    compared with each trait's pole descriptions."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 32, embedder=None):
        from sarft_core.embeddings import SentenceEmbedder, default_embedder

        if embedder is None:
            embedder = default_embedder() if model_dir is None and device == "cpu" else SentenceEmbedder(model_dir, device, batch_size)
        self.embedder = embedder
        self.model_dir = embedder.model_dir
        self._pole_cache: dict[str, tuple] = {}
        self._sentence_cache: dict[str, object] = {}  # profile text -> its sentences' embeddings

    def embed(self, texts: list[str]):
        return self.embedder.embed(list(texts))

    def poles(self, trait: Trait):
        if trait.name not in self._pole_cache:
            self._pole_cache[trait.name] = (self.embed(list(trait.high_poles)), self.embed(list(trait.low_poles)))
        return self._pole_cache[trait.name]

    def sentence_embeddings(self, text: str):
        """The text's sentences embedded (the whole text when it has none), kept per text: the
        pole contrasts and the learned malevolence scale read the same rows."""
        if text not in self._sentence_cache:
            if len(self._sentence_cache) >= 1024:
                self._sentence_cache.clear()
            self._sentence_cache[text] = self.embed(split_sentences(text) or [text])
        return self._sentence_cache[text]

    def raw_scores(self, text: str, traits: Iterable[str] = TRAITS) -> dict[str, float]:
        emb = self.sentence_embeddings(text)
        return {t: contrast(emb, *self.poles(TRAIT_DEFS[t])) for t in traits}


def embedding_model_dir() -> Path:
    from sarft_core.embeddings import embedding_model_dir as model_dir

    return model_dir()


_RATER: EmbeddingRater | None = None


def default_rater() -> EmbeddingRater:
    global _RATER
    if _RATER is None:
        _RATER = EmbeddingRater()
    return _RATER
