"""A fixed evaluation panel, run in-process on a loaded model: the numbers of the paper's table.

It measures what the aligned-model benchmark and the reproduction grid report, on prompts that
no training in the project sees:

- ``advbench``: refusal on AdvBench's held-out (odd) rows; ``margin``: the refusal margin there
  (generation-free, continuous: the number that resolves small differences);
- ``xstest_unsafe`` refusal and ``xstest_safe`` compliance (over-refusal);
- ``jailbreak``: refusal under the five jailbreak transforms, averaged over the attacks;
- ``rouge_l``: RoleBench role-specific ROUGE-L (x100) of one role's answers.

Generation is greedy with an empty system turn (as in training), unless the caller gives one
(the grid's ptst cells: the role profile and a safety instruction). Refusals are judged by one
registered judge (default: the keyword judge, instant and deterministic), on the answer's opening (``max_new_tokens`` 48 by default: a refusal shows in the
first sentence; the published 128 only lengthens the compliant answers).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sarft_core.errors import SarftError
from sarft_core.evaluation import datasets as ds
from sarft_core.evaluation.metric_registry import metric_info
from sarft_core.evaluation.metrics import COMPLIANCE, REFUSAL, counts_as, mean_with_ci, rate
from sarft_core.models import DTYPES
from sarft_core.validation import choice, number, validate_choices, validate_numbers

# the panel's metrics, declared in the metric registry (a survey reads `eval` runs, not the panel: only the
# numbers both report are surveyed); name -> (kind, higher is safer?)
PANEL_METRICS = {info.name: (info.kind, info.higher_is_safer) for info in map(metric_info, (
    "advbench", "margin", "xstest_unsafe", "xstest_safe", "jailbreak", "rouge_l"))}


@dataclass
class PanelConfig:
    # held-out AdvBench prompts for the refusal rate (None: all 260)
    advbench: int | None = number(100, lo=1, integer=True, optional=True, option="panel advbench")
    # held-out AdvBench prompts for the margin (None: all 260)
    margin: int | None = number(None, lo=1, integer=True, optional=True, option="panel margin")
    # XSTest prompts per label (None: all 250 safe / 200 unsafe)
    xstest: int | None = number(50, lo=1, integer=True, optional=True, option="panel xstest")
    jailbreak: int = number(10, lo=0, integer=True, option="panel jailbreak")  # held-out AdvBench prompts per attack (0: skip)
    rolebench: int = number(20, lo=0, integer=True, option="panel rolebench")  # RoleBench questions of the role (0 or no role: skip)
    judge: str = "keyword"  # any registered judge (sarft_core.evaluation.judges); saved rows can be re-judged by others
    max_new_tokens: int = number(48, lo=1, hi=1_000_000, integer=True, option="panel max_new_tokens")
    # the precision a caller loads the model in for the panel (bf16: about 1.9x faster on CPUs with bf16 matmuls)
    dtype: str = choice("float32", DTYPES, option="panel dtype")
    rouge_tokens: int = number(96, lo=1, hi=1_000_000, integer=True, option="panel rouge_tokens")
    batch_size: int = number(32, lo=1, hi=1_000_000, integer=True, option="panel batch_size")
    data_dir: str | None = None
    metrics: list[str] = field(default_factory=lambda: list(PANEL_METRICS))
    # registered file benchmarks (`benchmark add`), each a refusal rate on its first `advbench` prompts
    benchmarks: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """The ranges and values above, and a registered judge and known metrics: before any work."""
        from sarft_core.evaluation.judges import judge_names

        validate_numbers(self)
        validate_choices(self)
        if not isinstance(self.judge, str) or self.judge not in judge_names():
            raise SarftError(f"unknown panel judge {self.judge!r}", f"use one of {', '.join(judge_names())}")
        if not isinstance(self.metrics, list) or not self.metrics or any(m not in PANEL_METRICS for m in self.metrics):
            raise SarftError(f"panel metrics must be a list of some of {', '.join(PANEL_METRICS)}, got {self.metrics!r}",
                             "leave metrics out (all of them) or list known ones")
        if not isinstance(self.benchmarks, list) or not all(isinstance(b, str) for b in self.benchmarks):
            raise SarftError(f"panel benchmarks must be a list of names, got {self.benchmarks!r}", "pass --benchmarks NAME[,NAME]")
        self.benchmark_files()  # each one registered, before any work

    def files(self, rouge_given: bool = False) -> dict[str, Path]:
        """The data files :func:`run_panel` reads for these metrics (RoleBench's only when the caller
        gives no role-play questions of its own)."""
        want = set(self.metrics)
        keys = (["advbench"] if want & {"advbench", "margin", "jailbreak"} else []) + (
            ["xstest"] if want & {"xstest_unsafe", "xstest_safe"} else []) + (
            ["rolebench_spe"] if "rouge_l" in want and self.rolebench and not rouge_given else [])
        return {**{key: ds.resolve_data_file(key, None, self.data_dir) for key in keys},
                **{f"benchmark {name}": path for name, path in self.benchmark_files().items()}}

    def benchmark_files(self) -> dict[str, Path]:
        """{name: prompts file} of the registered benchmarks this panel runs (an unknown name is an error)."""
        from sarft_core.evaluation.suites import read_benchmarks

        if not self.benchmarks:
            return {}
        known = read_benchmarks()
        missing = [b for b in self.benchmarks if b not in known]
        if missing:
            raise SarftError(f"no registered benchmark {', '.join(map(repr, missing))} (registered: {', '.join(known) or 'none'})",
                             "register the file first: python -m sarft_core benchmark add NAME FILE")
        return {name: Path(known[name]["path"]) for name in self.benchmarks}

    def identity(self) -> dict:
        out = asdict(self)
        out.pop("batch_size")
        out.pop("data_dir")
        return out


def heldout_advbench(data_dir: str | Path | None = None) -> list[ds.Item]:
    """AdvBench's odd rows: never used in alignment or role-play training."""
    from sarft_core.evaluation.suites import SuiteContext, heldout_advbench as held

    return held(SuiteContext(data_dir=data_dir))


# each panel metric is a registered suite run by the Evaluator: metric -> (suite, the PanelConfig
# field that limits its prompts); jailbreak runs once per attack (see run_panel)
PANEL_SUITES = {
    "advbench": ("advbench-heldout", "advbench"),
    "margin": ("margin-heldout", "margin"),
    "xstest_unsafe": ("xstest-unsafe", "xstest"),
    "xstest_safe": ("xstest-safe", "xstest"),
    "jailbreak": ("jailbreak-heldout", "jailbreak"),
    "rouge_l": ("rolebench-spe", "rolebench"),
}


def _rows(metric: str, df, verdict: str | None) -> list[dict]:
    """The grid's generation rows (generations/<cell>.jsonl) from a suite's table."""
    if metric == "rouge_l":
        return [{"metric": metric, "id": i, "group": "spe", "prompt": p, "response": r, "label": "", "score": s}
                for i, p, r, s in zip(df["id"], df["prompt"], df["response"], df["rouge_l"])]
    return [{"metric": metric, "id": i, "group": g, "prompt": p, "response": r, "label": lab}
            for i, g, p, r, lab in zip(df["id"], df["group"], df["prompt"], df["response"], df[verdict])]


def run_panel(lm, cfg: PanelConfig, role: str | None = None, progress: Callable[[str], None] | None = None,
              rouge_items: list[ds.Item] | None = None, folder: str | Path | None = None, system: str | None = None) -> dict:
    """{metric: {value, ci_low, ci_high, n}} plus ``"rows"`` (every judged generation) and
    ``"margin_values"`` (the per-prompt margins). ``rouge_items`` replaces the role's first
    ``cfg.rolebench`` RoleBench questions (held-out questions of a training split). ``system`` is
    the system turn of every prompt, the role-play questions' included (None: empty, as published).

    Every metric is a registered suite (:data:`PANEL_SUITES`) run by the one
    :class:`~sarft_core.evaluation.runner.Evaluator`, into ``folder`` (an ``eval`` run: tables,
    answers, metrics.json) or a temporary one."""
    import tempfile
    from dataclasses import replace

    from sarft_core.evaluation.attacks import get_attacks
    from sarft_core.evaluation.generation import GenerationConfig
    from sarft_core.evaluation.judges import build_judge
    from sarft_core.evaluation.runner import Evaluator
    from sarft_core.evaluation.suites import SUITES, SuiteContext
    from sarft_core.store import create_run

    say = progress or (lambda _m: None)
    want = set(cfg.metrics)
    judges = [build_judge(cfg.judge)] if (want - {"margin", "rouge_l"}) or cfg.benchmarks else []
    verdict = f"verdict_{judges[0].name}" if judges else None
    base = SuiteContext(data_dir=cfg.data_dir, role=role, questions=rouge_items, role_system=system or None)
    out: dict = {}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="sarft-panel-") as tmp:
        run = create_run("eval", {"panel": cfg.identity(), "role": role, "system_prompt": system or ""},
                         path=Path(folder or Path(tmp) / "panel"))

        def evaluator(max_new_tokens: int) -> Evaluator:
            # margins in one pass: the published grid's packing
            return Evaluator(run, lambda: lm, GenerationConfig(max_new_tokens=max_new_tokens, batch_size=cfg.batch_size,
                                                               system_prompt=system or None),
                             judges, margin_chunk=None)

        def table(metric: str, ctx: SuiteContext | None = None, tokens: int = cfg.max_new_tokens):
            suite, limit = PANEL_SUITES[metric]
            return evaluator(tokens).table(SUITES[suite], ctx or replace(base, limit=getattr(cfg, limit)))

        def judged(metric: str, df, positive=REFUSAL):
            rows.extend(_rows(metric, df, verdict))
            return rate(df[verdict].tolist(), positive)

        if "advbench" in want:
            say("advbench")
            out["advbench"] = judged("advbench", table("advbench"))
        if "margin" in want:
            say("margin")
            margins = table("margin")["margin"].tolist()
            out["margin"] = mean_with_ci(margins)
            out["margin_values"] = margins
        if {"xstest_unsafe", "xstest_safe"} & want:
            say("xstest")
            for metric, positive in (("xstest_unsafe", REFUSAL), ("xstest_safe", COMPLIANCE)):
                if metric in want:
                    out[metric] = judged(metric, table(metric), positive)
        if "jailbreak" in want and cfg.jailbreak:
            say("jailbreak")
            per_attack = []
            for attack in get_attacks(None):  # one attack at a time: the published grid's batches
                df = table("jailbreak", replace(base, limit=cfg.jailbreak, attacks=[attack.name]))
                rows.extend(_rows("jailbreak", df, verdict))
                per_attack += [1.0 if counts_as(lab, REFUSAL) else 0.0 for lab in df[verdict]]
            out["jailbreak"] = mean_with_ci(per_attack)
        for name in cfg.benchmarks:  # registered file benchmarks: refusal on their first `advbench` prompts
            from sarft_core.evaluation.suites import get_suite

            say(name)
            ctx = replace(base, limit=cfg.advbench)
            out[name] = judged(name, evaluator(cfg.max_new_tokens).table(get_suite(name, ctx), ctx))
        if "rouge_l" in want and (rouge_items or (cfg.rolebench and role)):
            say("rolebench")
            df = table("rouge_l", replace(base, limit=cfg.rolebench), tokens=cfg.rouge_tokens)
            rows.extend(_rows("rouge_l", df, None))
            out["rouge_l"] = mean_with_ci(df["rouge_l"].tolist())
    out["rows"] = rows
    return out
