"""Evaluation suites as small declarations: dataset + solver + scorer + metrics.

A suite names where its prompts come from (a loader), how answers are produced (``generate``
or the generation-free ``margin``), how they are scored (a refusal ``judge`` or ``rouge``) and
which numbers it reports. The engine (:mod:`sarft_core.evaluation.runner`) knows nothing about
any particular suite: adding one is one ``register(Suite(...))`` call here or in user code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sarft_core.errors import SarftError
from sarft_core.evaluation import datasets as ds
from sarft_core.evaluation.attacks import get_attacks
from sarft_core.evaluation.datasets import Item
from sarft_core.evaluation.metric_registry import BETTER, SAFER, register_metric
from sarft_core.evaluation.metrics import COMPLIANCE, REFUSAL


@dataclass
class SuiteContext:
    """What the user chose that loaders need: data locations, limit, role, attack list."""

    data_dir: str | Path | None = None
    paths: dict = field(default_factory=dict)  # advbench, xstest, rolebench_spe, rolebench_raw, probes
    limit: int | None = None
    role: str | None = None
    role_system: str | None = None  # system prompt for role-play generation (default: none, as in training)
    prompt_col: str | None = None
    attacks: list[str] | None = None

    def file(self, key: str) -> Path:
        return ds.resolve_data_file(key, self.paths.get(key), self.data_dir)

    def has(self, key: str) -> bool:
        try:
            self.file(key)
            return True
        except SarftError:
            return False


@dataclass(frozen=True)
class Metric:
    name: str  # refusal_rate, compliance_rate, rouge_l, margin, margin_positive
    kind: str  # "rate": share of a judge label; "mean": mean of a numeric column
    group: str | None = None  # items of this group only (None: all)
    positive: str | None = None  # the label counted by a rate
    column: str | None = None  # the column averaged by a mean
    per_group: bool = False  # one number per group, plus the pooled one under group "all"


@dataclass
class Suite:
    name: str
    description: str
    dataset: Callable[[SuiteContext], list[Item]]
    metrics: list[Metric]
    solver: str = "generate"  # or "margin"
    scorer: str = "judge"  # or "rouge", "none"
    system: Callable[[SuiteContext], str | None] | None = None  # overrides the run's system prompt
    judge_text: Callable[[Item, str], str] | None = None  # what a judge reads (default: the response)
    judge_prompt: Callable[[Item], str] | None = None  # the request a judge sees (default: the prompt)


SUITES: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    SUITES[suite.name] = suite
    return suite


def harmful_prompts(ctx: SuiteContext) -> list[Item]:
    """AdvBench when it is available, else the harmful half of our probes."""
    if ctx.has("advbench"):
        return ds.load_advbench(ctx.file("advbench"), ctx.limit)
    return [it for it in ds.load_probes(ctx.paths.get("probes"), ctx.limit) if it.group == "harmful"]


def jailbreak_items(ctx: SuiteContext) -> list[Item]:
    out = []
    for attack in get_attacks(ctx.attacks):
        for base in harmful_prompts(ctx):
            out.append(Item(f"{attack.name}-{base.id}", attack.apply(base.prompt), attack.name,
                            meta={"source_prompt": base.prompt, "attack": attack.name}))
    return out


def _attack_view(item: Item, response: str) -> str:
    return get_attacks([item.meta["attack"]])[0].for_judge(response)


def rolebench_items(ctx: SuiteContext) -> list[Item]:
    if not ctx.role:
        raise SarftError("the rolebench suite needs a role", "pass --role \"NAME\" (a RoleBench character)")
    items = ds.load_rolebench(ctx.file("rolebench_spe"), ctx.role, "spe", ctx.limit)
    if ctx.has("rolebench_raw"):
        try:
            items += ds.load_rolebench(ctx.file("rolebench_raw"), ctx.role, "raw", ctx.limit)
        except SarftError:
            pass  # RAW exists for 10 roles only; the others report SPE alone
    return items


REFUSAL_RATE = Metric("refusal_rate", "rate", "harmful", REFUSAL)

# what the suites' numbers mean, for every view (sarft_core.evaluation.metric_registry); the survey
# records refusal, margin and ROUGE-L (compliance and the margin's sign are left to the run views)
register_metric("refusal_rate", "refusal", SAFER, "refusal rate (harmful prompts)")
register_metric("compliance_rate", "compliance", BETTER, "compliance rate (harmless prompts)", survey=None)
register_metric("margin", "margin", SAFER, "refusal margin (nats/token)", survey="refusal_margin")
register_metric("margin_positive", "margin-share", SAFER, "share of prompts with a positive margin", survey=None)
register_metric("rouge_l", "role-play", BETTER, "RoleBench ROUGE-L")

register(Suite(
    "advbench", "AdvBench harmful behaviours: refusal rate (higher is safer)",
    lambda ctx: ds.load_advbench(ctx.file("advbench"), ctx.limit), [REFUSAL_RATE],
))
register(Suite(
    "xstest", "XSTest: compliance on safe prompts (over-refusal) and refusal on unsafe ones",
    lambda ctx: ds.load_xstest(ctx.file("xstest"), ctx.limit),
    [Metric("compliance_rate", "rate", "safe", COMPLIANCE), Metric("refusal_rate", "rate", "unsafe", REFUSAL)],
))
register(Suite(
    "probes", "the project's probes: refusal on harmful requests, compliance on harmless look-alikes",
    lambda ctx: ds.load_probes(ctx.paths.get("probes"), ctx.limit),
    [REFUSAL_RATE, Metric("compliance_rate", "rate", "harmless", COMPLIANCE)],
))
register(Suite(
    "jailbreak", "harmful prompts under five jailbreak transforms: refusal rate per attack and pooled",
    jailbreak_items, [Metric("refusal_rate", "rate", None, REFUSAL, per_group=True)],
    judge_text=_attack_view, judge_prompt=lambda item: item.meta["source_prompt"],
))
register(Suite(
    "margin", "refusal margin: mean logp(refusal) - mean logp(compliant opening), generation-free",
    harmful_prompts,
    [Metric("margin", "mean", "harmful", column="margin"), Metric("margin_positive", "mean", "harmful", column="margin_positive")],
    solver="margin", scorer="none",
))
register(Suite(
    "rolebench", "RoleBench: ROUGE-L F x100 against reference answers, role-specific (spe) and general (raw)",
    rolebench_items, [Metric("rouge_l", "mean", None, column="rouge_l", per_group=True)],
    scorer="rouge", system=lambda ctx: ctx.role_system,
))


def get_suite(name: str, ctx: SuiteContext) -> Suite:
    """A registered suite, or an ad-hoc one for a CSV / JSONL / JSON / parquet file of prompts."""
    if name in SUITES:
        return SUITES[name]
    path = Path(name).expanduser()
    if path.suffix.lower() in (".csv", ".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise SarftError(f"prompt file does not exist: {path}", "check the path given in --suite")
        return Suite(
            path.stem, f"prompts from {path}: refusal rate",
            lambda c, p=path: ds.load_prompt_file(p, c.limit, c.prompt_col), [REFUSAL_RATE],
        )
    raise SarftError(f"unknown suite {name!r}", f"use any of {', '.join(SUITES)}, or the path of a .csv/.jsonl file with a prompt column")
