"""A survey's settings and its directory: SurveyConfig, the role slugs, opening (or resuming) a survey, role locks."""
from __future__ import annotations


import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from sarft_core.data.profiles import UNSAFE_INSTRUCTION_VARIANTS
from sarft_core.errors import SarftError
from sarft_core.scoring.options import DEFAULT_WORDINGS
from sarft_core.traits import SOURCES as TRAIT_SOURCES
from sarft_core.validation import choice, number, validate_choices, validate_numbers
from sarft_core.store import RunDir, create_run, ensure_dir, file_lock, read_json_object, slug



SCREEN, FULL = "screen", "full"
# config fields that must not change when a survey is resumed (they change the results)
_RESULT_FIELDS = ("mode", "methods", "peft", "model", "data", "profiles", "limit", "answer_index", "exact", "train_args", "eval_args",
                  "wordings")


@dataclass
class SurveyConfig:
    roles: list[str]
    mode: str = SCREEN
    methods: list[str] = field(default_factory=lambda: ["sft", "sarft"])
    peft: str = "lora"
    model: str = ""  # "" = the embedded default model
    data: list[str] = field(default_factory=list)  # sample files; empty = the demo samples
    profiles: str = ""  # "" = the demo profiles
    limit: int | None = number(None, lo=1, integer=True, optional=True, option="--limit")
    answer_index: int = number(0, lo=0, integer=True, option="--answer-index")
    exact: bool = False  # score in IEEE fp32 instead of the fast mode
    device: str = "auto"
    batch_tokens: int | None = None  # None: the scorer's default for the device
    trait_source: str = choice("default", TRAIT_SOURCES, option="--traits")
    trait_csv: str = ""
    train_args: str = ""  # extra arguments for `train`, e.g. "--max-steps 20"
    eval_args: str = "--suite margin --judge keyword"  # generation-free; add rolebench,probes for more
    validation: bool = False  # measure each role's flags against their influence on refusal (score --validate)
    # rewordings of the unsafe instruction whose spread is each flag's error (score --wordings; 0: the token bootstrap)
    wordings: int = number(DEFAULT_WORDINGS, lo=0, hi=len(UNSAFE_INSTRUCTION_VARIANTS), integer=True, option="--wordings")

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        validate_numbers(self)
        validate_choices(self)
        from sarft_core.models import check_device
        from sarft_core.training.run import METHODS

        check_device(self.device)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:  # before any role is scored: a bad name would otherwise fail only at its first training
            raise SarftError(f"unknown training method(s) in --methods: {', '.join(map(repr, unknown))}",
                             f"use a comma-separated subset of {', '.join(METHODS)}")


def legacy_role_slug(name: str) -> str:
    """The folder name of surveys made before slugs carried a hash (two names could share it)."""
    return slug(name, sep="_", limit=None, default="role")


def role_slug(name: str) -> str:
    """A collision-free folder name: the readable slug plus a short hash of the exact name, so
    names that differ only in characters the slug drops (an emoji, punctuation) never share one."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{legacy_role_slug(name)[:80]}-{digest}"


def role_key(config: SurveyConfig, profile, samples: list, model_fingerprint: str) -> str:
    """What one role's result depends on, by content: the profile's text, the sample rows, every
    result-defining setting and the model's weights. A finished role is reused only under the same
    key, so an edited profile or data file is surveyed afresh even where the file paths match."""
    content = {
        "profile": profile.to_dict(), "samples": [s.to_dict() for s in samples], "model": model_fingerprint,
        "settings": {k: getattr(config, k) for k in _RESULT_FIELDS if k not in ("data", "profiles", "wordings")},
    }
    if config.wordings != DEFAULT_WORDINGS:  # only where changed, so the keys of surveys made before stay valid
        content["settings"]["wordings"] = config.wordings
    if config.validation:
        # a validated role is another result (and a survey resumed with --validate redoes its roles,
        # scores from the cache); only where asked, so the keys of surveys made before stay valid
        content["settings"]["validate"] = validation_settings()
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def validation_settings() -> dict:
    """What a role's validation depends on besides its samples and model: the validation's options
    (the held-out prompts, how many, the top fraction), as ``score --validate`` defaults them."""
    from sarft_core.scoring.validate import ValidateOptions

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(ValidateOptions()).items()}


# ---------------------------------------------------------------- the survey directory
@dataclass
class Survey:
    run: RunDir
    config: SurveyConfig
    _keys: dict = field(default_factory=dict, repr=False, compare=False)  # role -> its current key (None: no data)
    _context: dict = field(default_factory=dict, repr=False, compare=False)

    def role_inputs(self, role: str):
        """(profile, samples) of a role as the survey's files hold them now; raises SarftError
        when the role has no profile or no samples."""
        from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES, get_profile, load_profiles
        from sarft_core.data.samples import load_role_samples

        if "profiles" not in self._context:
            self._context["profiles"] = load_profiles(self.config.profiles or DEMO_PROFILES)
        profile = get_profile(self._context["profiles"], role)
        return profile, load_role_samples(self.config.data or [str(DEMO_SAMPLES)], profile.name, self.config.limit, self.config.answer_index)

    def model_fingerprint(self) -> str:
        if "model" not in self._context:
            from sarft_core.models import model_fingerprint

            self._context["model"] = model_fingerprint(self.config.model or None)
        return self._context["model"]

    def role_key(self, role: str, inputs=None) -> str | None:
        """The role's current key (see :func:`role_key`); None when its data cannot be read."""
        if role not in self._keys:
            try:
                profile, samples = inputs or self.role_inputs(role)
            except SarftError:
                return None
            self._keys[role] = role_key(self.config, profile, samples, self.model_fingerprint())
        return self._keys[role]

    @property
    def path(self) -> Path:
        return self.run.path

    def slug(self, role: str) -> str:
        """The role's folder name; a survey made before hashed slugs keeps its old one for a role
        whose finished result names exactly this role (so old surveys stay readable)."""
        legacy = legacy_role_slug(role)
        old = read_json_object(self.path / "roles" / f"{legacy}.json", None)
        if old is not None and old.get("role") == role and not (self.path / "roles" / f"{role_slug(role)}.json").exists():
            return legacy
        return role_slug(role)

    def role_dir(self, role: str) -> Path:
        return ensure_dir(self.path / "roles" / self.slug(role))

    def result_path(self, role: str) -> Path:
        return self.path / "roles" / f"{self.slug(role)}.json"

    def lock_path(self, role: str) -> Path:
        return self.path / "roles" / f"{role_slug(role)}.lock"

    def result(self, role: str) -> dict | None:
        """The role's finished result; a damaged file (or one of another role) reads as not done."""
        data = read_json_object(self.result_path(role), None)
        if data is None or data.get("role") != role:
            return None
        return data

    def is_done(self, role: str) -> bool:
        """Finished, by anyone, from the role's current content (a result of other content is stale)."""
        r = self.result(role)
        return bool(r) and r.get("status") == "ok" and r.get("key") is not None and r.get("key") == self.role_key(role)

    def pending(self) -> list[str]:
        return [r for r in self.config.roles if not self.is_done(r)]


def open_survey(path: str | Path, config: SurveyConfig) -> Survey:
    """Create a survey directory, or reopen one to resume (its result-defining settings must match)."""
    config.validate()
    path = Path(path)
    old = read_json_object(path / "config.json", {})
    if old is not None and old.get("kind") == "survey" and not (isinstance(old.get("roles", []), list) and all(isinstance(r, str) for r in old.get("roles", []))):
        old = None
    if old is None:
        raise SarftError(f"{path / 'config.json'} is damaged (not a JSON object)",
                         "choose another --out (finished roles under roles/ stay readable there), or restore the file")
    if old and old.get("kind") == "survey":
        changed = [k for k in _RESULT_FIELDS if k in old and old[k] != getattr(config, k)]
        if changed:
            raise SarftError(
                f"{path} holds a survey made with other settings ({', '.join(f'{k}: {old[k]!r} -> {getattr(config, k)!r}' for k in changed)})",
                "use another --out for the new settings, or repeat the original ones to resume",
            )
        # a resumed survey may add roles; keep the union, in order
        roles = list(dict.fromkeys(list(old.get("roles", [])) + list(config.roles)))
        config = SurveyConfig(**dict(config.to_dict(), roles=roles))
    elif old:
        raise SarftError(f"{path} is a {old.get('kind', 'unknown')} run, not a survey", "choose an empty or new --out directory")
    run = create_run("survey", config.to_dict(), path=path)
    return Survey(run, config)


class RoleLock:
    """An exclusive, non-blocking claim on one role; released by the OS if the process dies."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = None

    def acquire(self, wait: bool = False) -> bool:
        self._lock = file_lock(self.path, wait=wait)
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
