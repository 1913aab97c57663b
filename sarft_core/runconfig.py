"""A run directory's ``config.json`` as one typed value: :class:`RunConfig`.

The writers build it (``RunConfig.for_training``, ``for_evaluation``, ``for_scoring``) and store
``to_dict()``; every reader (the run views behind the dashboard, the report, ``eval --run``)
gets the same fields from :meth:`RunConfig.of` / :meth:`RunConfig.read` instead of picking keys
out of the JSON itself. Reading is tolerant: a field of the wrong type (a hand-edited file) reads
as missing, and configs written by older versions keep their meaning (λ before the top-level
``lambda`` key was written: the stored training options' ``lam``). Kinds with a dataclass of
their own (``survey``, ``reproduce``) are read through ``stored`` and :meth:`RunConfig.flat`.

This module imports neither torch nor the training code: :attr:`RunConfig.train` builds the
:class:`sarft_core.training.config.TrainConfig` only when asked for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarft_core.store import _CONFIG_TYPES, RunDir, _typed_fields, atomic_write_json, read_json_object

if TYPE_CHECKING:
    from sarft_core.training.config import TrainConfig



def _labels_lambda(method: str) -> bool:
    """Whether runs of ``method`` name λ in their labels (its record says; a method no longer
    registered keeps λ, as every method but sft and sppft did before the registry)."""
    from sarft_core.errors import SarftError
    from sarft_core.training.methods import get_method

    try:
        return get_method(method).labels_lambda
    except SarftError:
        return True


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _number(value) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation run (kind ``eval``) was asked: the model's identity and the setting."""

    source_run: str | None = None  # the training run evaluated (None: a model given by --model)
    # None: not recorded (evaluations made before fingerprints); "" for a recorded value that is
    # not text, which matches no weights
    model_fingerprint: str | None = None
    generation: dict = field(default_factory=dict)  # GenerationConfig.identity()
    suites: tuple[str, ...] = ()
    judges: tuple[dict, ...] = ()
    # dtype/device kind the answers were computed in (None: not recorded, evaluations made before)
    precision: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> "EvalSettings":
        fingerprint = data.get("model_fingerprint")
        if "model_fingerprint" in data and fingerprint is not None and not isinstance(fingerprint, str):
            fingerprint = ""
        suites, judges = data.get("suites"), data.get("judges")
        return cls(
            source_run=data.get("source_run") if isinstance(data.get("source_run"), str) else None,
            model_fingerprint=fingerprint,
            generation=dict(data["generation"]) if isinstance(data.get("generation"), dict) else {},
            suites=tuple(s for s in suites if isinstance(s, str)) if isinstance(suites, list) else (),
            judges=tuple(j for j in judges if isinstance(j, dict)) if isinstance(judges, list) else (),
            precision=data.get("precision") if isinstance(data.get("precision"), str) else None,
        )

    def to_dict(self) -> dict:
        out = {"model_fingerprint": self.model_fingerprint} if self.model_fingerprint is not None else {}
        if self.precision is not None:
            out["precision"] = self.precision
        return dict(out, source_run=self.source_run, generation=dict(self.generation), suites=list(self.suites),
                    judges=[dict(j) for j in self.judges])


@dataclass(frozen=True)
class ScoreSettings:
    """What a score run (kind ``score``, the dashboard's scoring) records besides role and model."""

    data: str = "demo"  # the sample file ("demo": the demo samples)
    profiles_source: str = "demo"
    limit: int | None = None
    role_prompt: str = ""  # the profile as edited when the run was made
    unsafe_prompt: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "ScoreSettings":
        limit = data.get("limit")
        return cls(data=_text(data.get("data")) or "demo", profiles_source=_text(data.get("profiles_source")) or "demo",
                   limit=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
                   role_prompt=_text(data.get("role_prompt")), unsafe_prompt=_text(data.get("unsafe_prompt")))

    def to_dict(self) -> dict:
        return {"data": self.data, "profiles_source": self.profiles_source, "limit": self.limit,
                "role_prompt": self.role_prompt, "unsafe_prompt": self.unsafe_prompt}


@dataclass(frozen=True)
class RunConfig:
    """One run's config.json, typed. ``options`` are the stored training options (the ``train``
    block: a training run's TrainConfig fields, a reproduction grid's protocol), None when absent;
    ``stored`` is the whole object as read (wrongly typed known fields left out), for the fields
    of kinds that have no typed view here."""

    kind: str = ""
    model: str = ""  # the resolved model spec (embedded-aligned for the default), once the run has loaded it
    method: str = ""
    role: str = ""
    lam: float | int | None = None  # the KL weight as recorded (None: none recorded)
    model_fingerprint: str = ""  # the weights that ran (models.model_fingerprint); "" when not recorded
    options: dict | None = None
    eval: EvalSettings | None = None
    score: ScoreSettings | None = None
    stored: dict = field(default_factory=dict, compare=False, repr=False)

    # --- writers ------------------------------------------------------------------------------
    @classmethod
    def for_training(cls, cfg: "TrainConfig") -> "RunConfig":
        """A training run's config: the base model, method, role, the λ the loss uses (0 for
        methods without a KL term) and every TrainConfig field."""
        return cls(kind="train", model=cfg.model or "", method=cfg.method, role=cfg.role, lam=cfg.effective_lambda, options=cfg.to_dict())

    @classmethod
    def for_evaluation(cls, model: str, model_fingerprint: str, source_run: str | None, generation: dict,
                       suites: list[str], judges: list[dict], precision: str | None = None) -> "RunConfig":
        return cls(kind="eval", model=model, model_fingerprint=model_fingerprint,
                   eval=EvalSettings(source_run, model_fingerprint, dict(generation), tuple(suites), tuple(judges), precision))

    @classmethod
    def for_scoring(cls, role: str, model: str, settings: ScoreSettings) -> "RunConfig":
        return cls(kind="score", model=model, role=role, score=settings)

    def to_dict(self) -> dict:
        """The JSON object config.json holds (what :meth:`from_dict` reads back)."""
        out = dict(self.stored)
        out.update(kind=self.kind, model=self.model)
        if self.model_fingerprint:
            out["model_fingerprint"] = self.model_fingerprint
        if self.method or self.kind == "train":
            out["method"] = self.method
        if self.role or self.kind in ("train", "score"):
            out["role"] = self.role
        if self.kind == "train" or self.lam is not None:
            out["lambda"] = self.lam
        if self.options is not None:
            out["train"] = dict(self.options)
        if self.eval is not None:
            out.update(self.eval.to_dict())
        if self.score is not None:
            out.update(self.score.to_dict())
        return out

    # --- readers ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> "RunConfig":
        """The typed view of a stored config; anything that is not a JSON object reads as empty."""
        if not isinstance(data, dict):
            return cls()
        stored = _typed_fields(data, _CONFIG_TYPES)
        options = stored.get("train") if isinstance(stored.get("train"), dict) else None
        lam = stored.get("lambda")
        if lam is None and options is not None:
            lam = options.get("lam")  # runs written before the top-level key
        kind = _text(stored.get("kind"))
        return cls(
            kind=kind, model=_text(stored.get("model")), method=_text(stored.get("method")), role=_text(stored.get("role")),
            lam=_number(lam), model_fingerprint=_text(stored.get("model_fingerprint")), options=options,
            eval=EvalSettings.from_dict(data) if kind == "eval" else None,
            score=ScoreSettings.from_dict(stored) if kind == "score" else None,
            stored=stored,
        )

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunConfig | None":
        """``RUN_DIR/config.json``: empty when there is none, None when it is damaged (not a JSON
        object): the caller says what a damaged file means for it."""
        data = read_json_object(Path(run_dir) / "config.json", {})
        return None if data is None else cls.from_dict(data)

    @classmethod
    def of(cls, run: RunDir) -> "RunConfig":
        """A run's config for display: a damaged file reads as empty."""
        return cls.read(run.path) or cls()

    # --- what the views show -------------------------------------------------------------------
    @property
    def train(self) -> "TrainConfig | None":
        """A training run's options as a TrainConfig (fields it does not know are ignored, missing
        ones take their defaults); None for other kinds and for runs that recorded none."""
        if self.kind != "train" or self.options is None:
            return None
        from sarft_core.training.config import TrainConfig

        return TrainConfig.from_dict(self.options)

    @property
    def profiles(self) -> str | None:
        """The profiles file the run's role came from, where it recorded one."""
        for value in ((self.options or {}).get("profiles"), self.stored.get("profiles")):
            if isinstance(value, str) and value:
                return value
        return None

    @property
    def shows_lambda(self) -> bool:
        """Whether the run's label names λ: a KL weight was recorded and the method has a KL term."""
        return self.lam is not None and bool(self.method) and _labels_lambda(self.method)

    @property
    def model_name(self) -> str:
        """The recorded model as a person names it: the spec (``embedded-aligned``, a hub id), or
        a local folder's or training run's own name rather than its whole path."""
        spec = self.model.strip()
        if "/" in spec and (spec.startswith(("/", ".", "~")) or Path(spec).expanduser().exists()):
            return Path(spec.rstrip("/")).name or spec
        return spec

    def label(self, name: str) -> str:
        """``name (method, role, λ=...)`` with the parts the run has. An evaluation of a model is
        named by that model and its decoding (``embedded-aligned (eval, greedy)``): its folder
        name is a digest that tells a reader nothing."""
        if self.kind == "eval" and self.model_name:
            decoding = (self.eval.generation if self.eval is not None else {}).get("decoding")
            detail = ", ".join(b for b in ("eval", decoding if isinstance(decoding, str) else "") if b)
            return f"{self.model_name} ({detail})"
        bits = [self.method, self.role] + ([f"λ={self.lam}"] if self.shows_lambda else [])
        detail = ", ".join(b for b in bits if b)
        return f"{name} ({detail})" if detail else name

    def flat(self) -> dict:
        """Every stored field, and the training options' fields beside them (a top-level field of
        the same name wins): what a report's settings list chooses from."""
        out = dict(self.stored)
        out.update({k: v for k, v in (self.options or {}).items() if k not in out})
        return out


def record_model(run_dir: str | Path, spec: str, fingerprint: str, kind: str | None = None) -> bool:
    """Write the model that ran into a run's config.json: its resolved spec (``embedded-aligned``
    for the default, never a blank or a guess) and its fingerprint, read back as ``model`` and
    ``model_fingerprint``. Only into a run of ``kind`` (any run when None); a damaged or absent
    config is left alone. Returns whether it wrote."""
    path = Path(run_dir) / "config.json"
    data = read_json_object(path, None)
    if not data or not isinstance(data.get("kind"), str) or (kind is not None and data["kind"] != kind):
        return False
    if data.get("model") == spec and data.get("model_fingerprint") == fingerprint:
        return False
    atomic_write_json(path, dict(data, model=spec, model_fingerprint=fingerprint))
    return True


def runs_of_kind(kind: str, runs: list[RunDir] | None = None, role: str | None = None) -> list[RunDir]:
    """The runs (default: the workspace's, newest first) whose config names ``kind`` (and ``role``)."""
    from sarft_core.store import list_runs

    picked = []
    for run in list_runs() if runs is None else runs:
        cfg = RunConfig.of(run)
        if cfg.kind == kind and (role is None or cfg.role == role):
            picked.append(run)
    return picked
