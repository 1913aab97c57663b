"""Evaluation suites as small declarations: dataset + solver + scorer + metrics.

A suite names where its prompts come from (a loader), how answers are produced (``generate``
or the generation-free ``margin``), how they are scored (a refusal ``judge`` or ``rouge``) and
which numbers it reports. The engine (:mod:`sarft_core.evaluation.runner`) knows nothing about
any particular suite: adding one is one ``register(Suite(...))`` call here or in user code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sarft_core.errors import SarftError
from sarft_core.evaluation import datasets as ds
from sarft_core.evaluation.attacks import get_attacks
from sarft_core.evaluation.datasets import Item
from sarft_core.evaluation.metrics import COMPLIANCE, REFUSAL, mean_with_ci, rate


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
    # held-out role-play questions a caller split off itself (the reproduction grid's): they replace
    # the role's first RoleBench questions in rolebench-spe
    questions: list[Item] | None = None

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


def heldout_advbench(ctx: SuiteContext) -> list[Item]:
    """AdvBench's odd rows, in file order: the embedded-aligned model trained on the even ones
    (:func:`sarft_core.evaluation.datasets.advbench_split`), so only these measure it on unseen prompts."""
    items = ds.load_advbench(ctx.file("advbench"))
    _, held = ds.advbench_split(len(items))
    return ds._limit([items[i] for i in held], ctx.limit)


def heldout_jailbreak_items(ctx: SuiteContext) -> list[Item]:
    """The first ``limit`` held-out AdvBench prompts under each attack, attack by attack."""
    return [Item(f"{attack.name}-{base.id}", attack.apply(base.prompt), attack.name,
                 meta={"source_prompt": base.prompt, "attack": attack.name})
            for attack in get_attacks(ctx.attacks) for base in heldout_advbench(ctx)]


def xstest_label(label: str) -> Callable[[SuiteContext], list[Item]]:
    return lambda ctx: [it for it in ds.load_xstest(ctx.file("xstest"), ctx.limit) if it.group == label]


def rolebench_spe_items(ctx: SuiteContext) -> list[Item]:
    if ctx.questions:
        return list(ctx.questions)
    if not ctx.role:
        raise SarftError("the rolebench-spe suite needs a role", "pass --role \"NAME\" (a RoleBench character)")
    return ds.load_rolebench(ctx.file("rolebench_spe"), ctx.role, "spe", ctx.limit)


def alignment_prompts(ctx: SuiteContext) -> frozenset[str]:
    """The AdvBench prompts the embedded-aligned model was trained on (its even rows); empty
    when there is no AdvBench file to read them from."""
    if not ctx.has("advbench"):
        return frozenset()
    items = ds.load_advbench(ctx.file("advbench"))
    train, _ = ds.advbench_split(len(items))
    return frozenset(items[i].prompt for i in train)


def trained_on(model_fingerprint: str, items: list[Item], ctx: SuiteContext) -> list[str]:
    """Ids of the items a model's own alignment trained on (an item's source prompt counts for an
    attacked one). The embedded-aligned model and the fine-tunes that start from it (their
    fingerprints name it) trained on AdvBench's even rows; other models on none we know of."""
    if "embedded-aligned" not in (model_fingerprint or ""):
        return []
    seen = alignment_prompts(ctx)
    return [it.id for it in items if it.meta.get("source_prompt", it.prompt) in seen]


REFUSAL_RATE = Metric("refusal_rate", "rate", "harmful", REFUSAL)

register(Suite(
    "advbench", "AdvBench harmful behaviours: refusal rate (higher is safer)",
    lambda ctx: ds.load_advbench(ctx.file("advbench"), ctx.limit), [REFUSAL_RATE],
))
register(Suite(
    "xstest", "XSTest: compliance on safe prompts (over-refusal) and refusal on unsafe ones",
    lambda ctx: ds.load_xstest(ctx.file("xstest"), ctx.limit),
    [Metric("compliance_rate", "rate", "safe", COMPLIANCE), Metric("refusal_rate", "rate", "unsafe", REFUSAL)],
))
# what the margin suites measure, and how a jailbreak suite judges (the original request, the decoded answer)
MARGIN_METRICS = [Metric("margin", "mean", "harmful", column="margin"), Metric("margin_positive", "mean", "harmful", column="margin_positive")]
JAILBREAK_SCORING = dict(metrics=[Metric("refusal_rate", "rate", None, REFUSAL, per_group=True)],
                         judge_text=_attack_view, judge_prompt=lambda item: item.meta["source_prompt"])

register(Suite(
    "probes", "the project's probes: refusal on harmful requests, compliance on harmless look-alikes",
    lambda ctx: ds.load_probes(ctx.paths.get("probes"), ctx.limit),
    [REFUSAL_RATE, Metric("compliance_rate", "rate", "harmless", COMPLIANCE)],
))
register(Suite(
    "jailbreak", "harmful prompts under five jailbreak transforms: refusal rate per attack and pooled",
    jailbreak_items, **JAILBREAK_SCORING,
))
register(Suite(
    "margin", "refusal margin: mean logp(refusal) - mean logp(compliant opening), generation-free",
    harmful_prompts,
    MARGIN_METRICS,
    solver="margin", scorer="none",
))
register(Suite(
    "rolebench", "RoleBench: ROUGE-L F x100 against reference answers, role-specific (spe) and general (raw)",
    rolebench_items, [Metric("rouge_l", "mean", None, column="rouge_l", per_group=True)],
    scorer="rouge", system=lambda ctx: ctx.role_system,
))

# the reproduction panel's suites (sarft_core.evaluation.panel runs them): held-out prompts only, each
# label and attack its own suite so that the grid's batches, and so its numbers, stay as published
register(Suite(
    "advbench-heldout", "AdvBench's held-out (odd) rows, never trained on by embedded-aligned: refusal rate",
    heldout_advbench, [REFUSAL_RATE],
))
register(Suite(
    "margin-heldout", "refusal margin on AdvBench's held-out (odd) rows, generation-free",
    heldout_advbench,
    MARGIN_METRICS,
    solver="margin", scorer="none",
))
register(Suite("xstest-unsafe", "XSTest's unsafe prompts: refusal rate", xstest_label("unsafe"),
               [Metric("refusal_rate", "rate", "unsafe", REFUSAL)]))
register(Suite("xstest-safe", "XSTest's safe prompts: compliance rate (over-refusal = 1 - this)", xstest_label("safe"),
               [Metric("compliance_rate", "rate", "safe", COMPLIANCE)]))
register(Suite(
    "jailbreak-heldout", "held-out AdvBench prompts under the jailbreak transforms: refusal rate per attack and pooled",
    heldout_jailbreak_items, **JAILBREAK_SCORING,
))
register(Suite(
    "rolebench-spe", "RoleBench role-specific questions: ROUGE-L F x100 against the reference answers",
    rolebench_spe_items, [Metric("rouge_l", "mean", None, column="rouge_l")],
    scorer="rouge", system=lambda ctx: ctx.role_system,
))


def register_prompt_file(name: str, path: str | Path, description: str = "", prompt_col: str | None = None,
                         group: str = "harmful") -> Suite:
    """A benchmark of harmful prompts from a CSV / JSONL / JSON / parquet file (HarmBench's
    behaviours, say) as one registered suite: its refusal rate, under ``name`` in ``eval --suite``."""
    path = Path(path).expanduser()
    return register(Suite(
        name, description or f"prompts from {path.name}: refusal rate",
        lambda c, p=path: ds.load_prompt_file(p, c.limit, prompt_col or c.prompt_col, group), [REFUSAL_RATE],
    ))


# ---- benchmarks a user registers from a file: one record each in the workspace's benchmarks.json,
# so one `benchmark add` (or the Evaluation page's form) reaches `eval --suite`, the dashboard's
# suite list, `reproduce --benchmarks` and the reports
BENCHMARKS_FILE = "benchmarks.json"
BENCHMARK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_BUILTIN_SUITES: frozenset[str] = frozenset()  # set once the built-in suites below are registered


def benchmarks_path() -> Path:
    from sarft_core.store import workspace_root

    return workspace_root() / BENCHMARKS_FILE


def read_benchmarks() -> dict[str, dict]:
    """{name: {path, prompt_col, description}} of the registered file benchmarks (empty when none)."""
    from sarft_core.store import read_json_object

    path = benchmarks_path()
    if not path.is_file():
        return {}
    data = read_json_object(path)
    entries = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) and isinstance(v.get("path"), str) for v in entries.values()):
        raise SarftError(f"{path} is damaged (expected {{'benchmarks': {{name: {{'path': ...}}}}}})",
                         "fix it by hand, or delete it and register the benchmarks again with `python -m sarft_core benchmark add`")
    return entries


def load_benchmarks() -> list[str]:
    """Register every benchmark of benchmarks.json (a missing file is an error when its suite is run,
    not here: the list still shows it); returns their names."""
    entries = read_benchmarks()
    for name, entry in entries.items():
        register_prompt_file(name, entry["path"], entry.get("description", ""), entry.get("prompt_col") or None)
    return list(entries)


def suite_names() -> list[str]:
    """Every suite `eval --suite` accepts by name: the built-in ones, then the registered benchmarks."""
    load_benchmarks()
    return list(SUITES)


def add_benchmark(name: str, path: str | Path, prompt_col: str | None = None, description: str = "") -> Suite:
    """Register a file of harmful prompts (CSV / JSONL / JSON / parquet; HarmBench's behaviours, say)
    as the suite ``name``, for this workspace: checked first (a readable file with a prompt column
    and at least one prompt), then written to benchmarks.json."""
    from sarft_core.store import atomic_write_json, file_lock, lock_path_for

    name = str(name).strip()
    if not BENCHMARK_NAME.match(name):
        raise SarftError(f"benchmark name {name!r} is not one lower-case word", "use letters, digits, - and _ (e.g. harmbench)")
    if name in _BUILTIN_SUITES or name in PANEL_BENCHMARK_RESERVED:
        raise SarftError(f"{name!r} is a built-in suite or panel metric", "choose another name for the benchmark")
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise SarftError(f"benchmark file does not exist: {file}", "give the path of a .csv, .jsonl, .json or .parquet file of prompts")
    if file.suffix.lower() not in (".csv", ".jsonl", ".json", ".parquet"):
        raise SarftError(f"{file.name}: not a .csv, .jsonl, .json or .parquet file", "convert the prompts to one of these formats")
    items = ds.load_prompt_file(file, None, prompt_col)  # the file's errors, named, before anything is written
    store = benchmarks_path()
    lock = file_lock(lock_path_for(store))
    try:
        entries = read_benchmarks()
        entries[name] = {"path": str(file), "prompt_col": prompt_col or "", "description": description or f"{file.name}: refusal rate",
                         "prompts": len(items)}
        atomic_write_json(store, {"benchmarks": entries})
    finally:
        lock.release()
    return register_prompt_file(name, file, entries[name]["description"], prompt_col)


def remove_benchmark(name: str) -> None:
    from sarft_core.store import atomic_write_json, file_lock, lock_path_for

    store = benchmarks_path()
    lock = file_lock(lock_path_for(store))
    try:
        entries = read_benchmarks()
        if name not in entries:
            raise SarftError(f"no registered benchmark {name!r}", f"registered: {', '.join(entries) or 'none'}")
        del entries[name]
        atomic_write_json(store, {"benchmarks": entries})
    finally:
        lock.release()
    SUITES.pop(name, None)


def get_suite(name: str, ctx: SuiteContext) -> Suite:
    """A registered suite (built in, or a benchmark of benchmarks.json), or an ad-hoc one for a
    CSV / JSONL / JSON / parquet file of prompts."""
    if name not in SUITES:
        load_benchmarks()
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
    raise SarftError(f"unknown suite {name!r}", f"use any of {', '.join(SUITES)}, the path of a .csv/.jsonl file with a prompt column, "
                                                "or register the file first: python -m sarft_core benchmark add NAME FILE")


def suite_metrics(suite: Suite, df) -> list[dict]:
    """Every metric of a suite from its table (pure: re-grading only recomputes this)."""
    records = []
    verdict_cols = [c for c in df.columns if c.startswith("verdict_") and not c.endswith("_missing")]
    for metric in suite.metrics:
        rows = df if metric.group is None else df[df["group"] == metric.group]
        groups = [(metric.group or "all", rows)]
        if metric.per_group:
            groups = [(g, rows[rows["group"] == g]) for g in dict.fromkeys(rows["group"])] + [("all", rows)]
        for group, part in groups:
            if metric.kind == "rate":
                for col in verdict_cols:
                    stats = rate(part[col].tolist(), metric.positive)
                    records.append(dict(suite=suite.name, group=group, metric=metric.name, judge=col[len("verdict_"):], **stats))
            else:
                stats = mean_with_ci(part[metric.column].tolist())
                records.append(dict(suite=suite.name, group=group, metric=metric.name, judge="", **stats))
    return records


_BUILTIN_SUITES = frozenset(SUITES)
# names a benchmark may not take: the evaluation panel's metrics (a grid's columns)
PANEL_BENCHMARK_RESERVED = frozenset(("advbench", "margin", "xstest_unsafe", "xstest_safe", "jailbreak", "rouge_l"))
