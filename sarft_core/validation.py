"""One validation of every numeric option: declared once on the typed config, checked in one place.

A typed config (a dataclass such as :class:`sarft_core.training.TrainConfig`) declares the range of
each numeric field with :func:`number`::

    lr: float | None = number(None, lo=0, lo_open=True, option="--lr", optional=True)

and calls :func:`validate_numbers` from its validation. A text field with a fixed set of values
declares it with :func:`choice` (``method: str = choice("sarft", METHODS)``) and calls
:func:`validate_choices`. Every declared numeric value must be a real number
of the right kind (a bool is not a number, an int field takes no 2.5), finite (NaN and inf are
refused everywhere) and inside its range; the error names the option and the allowed range.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any

from sarft_core.errors import SarftError

_KEY = "sarft_number"
_CHOICES = "sarft_choices"
_CHOICE_OPTION = "sarft_choice_option"


@dataclasses.dataclass(frozen=True)
class Range:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    optional: bool = False  # None is allowed (means "the default")
    option: str = ""  # the CLI spelling, for the message
    extra: tuple = ()  # other allowed values outside the range, e.g. -1 = "no limit"
    hint: str = ""

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.lo is not None and self.hi is not None:
            text = f"{kind} in {'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{kind} {'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        elif self.hi is not None:
            text = f"{kind} {'<' if self.hi_open else '<='} {_fmt(self.hi)}"
        else:
            text = kind
        if self.extra:
            text += " (or " + " / ".join(_fmt(e) for e in self.extra) + ")"
        return text


def _fmt(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else str(v)


def number(default: Any = dataclasses.MISSING, **kw) -> Any:
    """A dataclass field with a declared numeric range (see :class:`Range`)."""
    return field(default=default, metadata={_KEY: Range(**kw)})


def choice(default: str, allowed, option: str = "") -> Any:
    """A dataclass text field with its declared set of allowed values (checked by
    :func:`validate_choices` and offered by the command line built from the config); ``option``:
    the CLI spelling for the message (default ``--field-name``)."""
    return field(default=default, metadata={_CHOICES: tuple(allowed), _CHOICE_OPTION: option})


def validate_choices(obj: Any) -> None:
    """Check every field of the dataclass ``obj`` declared with :func:`choice`: one message per
    option, naming the bad value and the allowed ones."""
    for f in dataclasses.fields(obj):
        if _CHOICES not in f.metadata:
            continue
        allowed, value = f.metadata[_CHOICES], getattr(obj, f.name)
        if not isinstance(value, str) or value not in allowed:
            option = f.metadata.get(_CHOICE_OPTION) or "--" + f.name.replace("_", "-")
            raise SarftError(f"unknown {option} {value!r}", f"use one of {', '.join(map(str, allowed))}")


def declared_choices(cls) -> dict[str, tuple]:
    """The allowed values declared with :func:`choice`, by field name."""
    return {f.name: f.metadata[_CHOICES] for f in dataclasses.fields(cls) if _CHOICES in f.metadata}


def check_number(value: Any, rng: Range, name: str = "value") -> Any:
    """``value`` if it satisfies ``rng``, else one SarftError naming the option and its range."""
    label = rng.option or name
    if value is None:
        if rng.optional:
            return value
        raise SarftError(f"{label} is missing", f"give {rng.describe()}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SarftError(f"{label} must be {rng.describe()}, got {value!r}", rng.hint or f"give {rng.describe()}")
    if value in rng.extra:
        return value
    if rng.integer and (isinstance(value, float) and not value.is_integer()):
        raise SarftError(f"{label} must be {rng.describe()}, got {value!r}", rng.hint or f"give {rng.describe()}")
    bad = not math.isfinite(value)
    if not bad and rng.lo is not None:
        bad = value <= rng.lo if rng.lo_open else value < rng.lo
    if not bad and rng.hi is not None:
        bad = value >= rng.hi if rng.hi_open else value > rng.hi
    if bad:
        raise SarftError(f"{label} must be {rng.describe()}, got {value!r}", rng.hint or f"give {rng.describe()}")
    return value


def validate_numbers(obj: Any) -> None:
    """Check every field of the dataclass ``obj`` that declares a range with :func:`number`."""
    for f in dataclasses.fields(obj):
        rng = f.metadata.get(_KEY)
        if rng is not None:
            check_number(getattr(obj, f.name), rng, "--" + f.name.replace("_", "-"))


def ranges(cls) -> dict[str, Range]:
    """The declared ranges of a config class, by field name (for docs and tests)."""
    return {f.name: f.metadata[_KEY] for f in dataclasses.fields(cls) if _KEY in f.metadata}


def require_finite_scores(rows: list[dict], what: str = "scoring", columns=("logp_ref", "logp_role", "logp_unsafe")) -> None:
    """Refuse scores with NaN / inf log-probs of a pass that was computed: a NaN margin is never
    flagged, so a broken model would otherwise read as "0 flagged" (a silently wrong audit).
    A column that is NaN for every row is a pass that was not asked for, and is left alone."""
    scored = [c for c in columns if any(isinstance(r.get(c), float) and not math.isnan(r[c]) for r in rows)]
    bad = [r for r in rows if any(not (isinstance(r.get(c), (int, float)) and math.isfinite(r[c])) for c in scored)]
    if not bad and rows and not scored:
        bad = rows  # every pass is NaN everywhere: nothing finite was computed at all
    if bad:
        raise SarftError(
            f"{what} produced non-finite (NaN or inf) log-probabilities for {len(bad)} of {len(rows)} samples "
            f"(first: {bad[0].get('id')!r}); no flags can be computed from them",
            "the model's weights or precision are broken: try --dtype float32, or check the model (a diverged training run?)",
        )
