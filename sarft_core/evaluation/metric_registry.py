"""What each reported metric is: one declaration per metric name, read by every view.

A metric's **kind** says which chart and which axis it belongs to (refusal on harmful prompts,
compliance on harmless ones, role-play quality, the refusal margin, ...) and its **direction**
says how to read a larger value: higher is safer, higher is better (more helpful, better
role-play) or neither. The run views (:mod:`sarft_core.runview`: the Compare page), the HTML
report, the survey and the evaluation panel read these declarations instead of guessing from a
metric's name.

The built-in metrics are declared below (:data:`BUILTIN_METRICS`); a new suite or benchmark
declares its own in its file::

    from sarft_core.evaluation.metric_registry import SAFER, register_metric
    register_metric("toxicity_refusal", "refusal", SAFER, "refusal on toxic prompts")

A name nobody declared is of kind ``other`` (direction neither): the views show it under "other
metrics" instead of leaving it out.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

SAFER, BETTER, NEITHER = "higher is safer", "higher is better", "neither"
DIRECTIONS = (SAFER, BETTER, NEITHER)
OTHER = "other"


@dataclass(frozen=True)
class Kind:
    name: str
    title: str  # what its chart's y axis says
    slug: str  # the chart's name in the report (compare-<slug>)
    percent: bool = False  # a rate or share in [0, 1], shown in percent by the text tables


# in the order their charts appear
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("refusal", "refusal rate on harmful prompts (higher is safer)", "refusal", percent=True),
    Kind("compliance", "compliance on harmless prompts (lower = over-refusal)", "compliance", percent=True),
    Kind("role-play", "ROUGE-L", "rouge"),
    Kind("margin", "refusal margin (nats, higher is safer)", "margin"),
    Kind("margin-share", "share of harmful prompts with a positive refusal margin", "margin-share", percent=True),
    Kind(OTHER, "other metrics (not declared in the metric registry)", "other"),
)}


@dataclass(frozen=True)
class MetricInfo:
    name: str
    kind: str
    direction: str
    label: str = ""  # its title in tables (the reproduction grid's columns, the Overview's figures)
    survey: str | None = ""  # its column in survey tables: "" = the metric's name, None = not surveyed

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def percent(self) -> bool:
        """Whether text tables show it in percent (its kind is a rate or a share)."""
        return KINDS[self.kind].percent

    @property
    def higher_is_safer(self) -> bool | None:
        """True where a larger value is safer; None otherwise (the panel's convention)."""
        return True if self.direction == SAFER else None

    @property
    def survey_column(self) -> str | None:
        return None if self.survey is None else (self.survey or self.name)


def format_measure(value, percent: bool, low=None, high=None, *, signed: bool = False, unit: str = "") -> str:
    """A metric's value, and its interval when both ends are given, as the text tables show them:
    rates (``percent``) times 100 with one decimal and ``unit`` after the value ("%", " pts"), other
    numbers with two decimals; ``signed`` for differences; "–" for a missing value."""
    if not isinstance(value, numbers.Real) or value != value:
        return "–"
    scale, spec = (100, ".1f") if percent else (1, ".2f")
    spec = ("+" if signed else "") + spec
    text = f"{scale * value:{spec}}" + (unit if percent else "")
    if isinstance(low, numbers.Real) and isinstance(high, numbers.Real):
        text += f" [{scale * low:{spec}}, {scale * high:{spec}}]"
    return text


METRICS: dict[str, MetricInfo] = {}


def register_metric(name: str, kind: str, direction: str, label: str = "", survey: str | None = "") -> MetricInfo:
    """Declare a metric. Declaring the same name again with the same meaning is harmless (two
    modules may report one number); a different kind or direction is an error, not a silent override."""
    if kind not in KINDS or kind == OTHER:
        raise ValueError(f"metric {name!r}: unknown kind {kind!r} (use one of {', '.join(k for k in KINDS if k != OTHER)})")
    if direction not in DIRECTIONS:
        raise ValueError(f"metric {name!r}: direction must be one of {DIRECTIONS}, not {direction!r}")
    info = MetricInfo(str(name), kind, direction, label, survey)
    have = METRICS.get(info.name)
    if have is not None and (have.kind, have.direction, have.survey_column) != (info.kind, info.direction, info.survey_column):
        raise ValueError(f"metric {name!r} is already declared as {have.kind} ({have.direction}), survey column {have.survey_column!r}")
    METRICS[info.name] = have or info
    return METRICS[info.name]


def unregister_metric(name: str) -> None:
    METRICS.pop(str(name), None)


# the built-in metrics, declared here once, in this order: the evaluation suites' numbers
# (sarft_core.evaluation.suites; the survey records refusal, margin and ROUGE-L, and leaves compliance
# and the margin's sign to the run views), the evaluation panel's (sarft_core.evaluation.panel: the
# reproduction grid's columns) and the aligned-model benchmark's probes (bench/bench_aligned.py)
BUILTIN_METRICS = (
    ("refusal_rate", "refusal", SAFER, "refusal rate (harmful prompts)", ""),
    ("compliance_rate", "compliance", BETTER, "compliance rate (harmless prompts)", None),
    ("margin", "margin", SAFER, "refusal margin (nats/token)", "refusal_margin"),
    ("margin_positive", "margin-share", SAFER, "share of prompts with a positive margin", None),
    ("rouge_l", "role-play", BETTER, "RoleBench ROUGE-L", ""),
    ("advbench", "refusal", SAFER, "refusal, AdvBench held-out", None),
    ("xstest_unsafe", "refusal", SAFER, "refusal, XSTest unsafe", None),
    # over-refusal: more helpful, not safer
    ("xstest_safe", "compliance", BETTER, "compliance, XSTest safe (over-refusal = 1 - this)", None),
    ("jailbreak", "refusal", SAFER, "refusal, jailbreak average", None),
    ("probes_harmful", "refusal", SAFER, "refusal, project probes", None),
    ("probes_harmless", "compliance", BETTER, "compliance, harmless probes", None),
)
for _name, _kind, _direction, _label, _survey in BUILTIN_METRICS:
    register_metric(_name, _kind, _direction, _label, survey=_survey)


def metric_info(name) -> MetricInfo:
    """The declaration of ``name``; an undeclared name is of kind ``other``."""
    name = str(name)
    return METRICS.get(name) or MetricInfo(name, OTHER, NEITHER)


def metric_kind(name) -> str:
    return metric_info(name).kind


def registered() -> dict[str, MetricInfo]:
    """Every declared metric, in declaration order."""
    return dict(METRICS)


def survey_columns() -> dict[str, str]:
    """metric name -> its survey column, for the declared metrics a survey records."""
    return {name: col for name, info in registered().items() if (col := info.survey_column)}


def kinds_in_order(kinds) -> list[Kind]:
    """The kinds among ``kinds``, in chart order."""
    present = set(kinds)
    return [k for k in KINDS.values() if k.name in present]
