"""The metric registry: one declaration per metric, read by the Compare data (runview), the report,
the survey and the panel; a metric declared only here, and one nobody declared, reach all of them."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from sarft_core import report, runview
from sarft_core.evaluation import metric_registry as registry
from sarft_core.evaluation.panel import PANEL_METRICS
from sarft_core.evaluation.suites import SUITES
from sarft_core.store import create_run
from sarft_core.survey import FULL, Steps, SurveyConfig, find_metrics, open_survey, run_pending, write_aggregate
from sarft_core.training.run import TrainConfig, run_config

NEW, UNDECLARED = "toxicity_rate", "mystery_score"
ROLES = ["Baron Vex Morrow", "Sister Alma Reyes", "Captain Nell Corran"]  # the demo profiles


@pytest.fixture
def new_metric():
    info = registry.register_metric(NEW, "refusal", registry.SAFER, "refusal on toxic prompts")
    yield info
    registry.unregister_metric(NEW)


def write_eval(path: Path, refusal: float, toxicity: float, mystery: float, method: str = "sft", role: str = "Villain"):
    """An evaluation in the engine's layout (metrics.json records), as a training run's eval/ folder."""
    run = create_run("train", run_config(TrainConfig(model="tiny", method=method, role=role, lam=0.5)), path=path)
    rec = lambda suite, group, metric, value, judge="keyword": {  # noqa: E731
        "suite": suite, "group": group, "metric": metric, "judge": judge, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 20}
    suites = {"probes": {"records": [rec("probes", "harmful", "refusal_rate", refusal)]},
              "toxic": {"records": [rec("toxic", "harmful", NEW, toxicity)]},
              "odd": {"records": [rec("odd", "all", UNDECLARED, mystery, "")]}}
    ev = run.path / "eval" / "greedy-0001"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps({"model": "tiny", "generation": {"decoding": "greedy"}, "suites": suites}))
    run.set_status("completed")
    return run


def test_builtin_metrics_keep_the_kinds_the_views_gave_them():
    """Every metric the suites report has a declaration; the refusal / role-play split is the one the
    views made from names before (a refusal is not the margin, ROUGE-L is role-play)."""
    names = {m.name for suite in SUITES.values() for m in suite.metrics}
    declared = registry.registered()
    assert names <= set(declared)
    for name in names:
        assert (declared[name].kind == "refusal") == ("refusal" in name and "margin" not in name)
        assert (declared[name].kind == "role-play") == ("rouge" in name)
        assert (declared[name].kind == "compliance") == name.startswith("compliance")
    for name, (kind, safer) in PANEL_METRICS.items():  # the panel's table is a view of the registry
        assert registry.metric_info(name).kind == kind and registry.metric_info(name).higher_is_safer is safer
    assert {k for k, (_, safer) in PANEL_METRICS.items() if safer} == {"advbench", "margin", "xstest_unsafe", "jailbreak"}


def test_undeclared_is_other_and_a_conflicting_declaration_is_refused(new_metric):
    assert registry.metric_info(UNDECLARED).kind == registry.OTHER and registry.metric_info(UNDECLARED).direction == registry.NEITHER
    assert registry.register_metric(NEW, "refusal", registry.SAFER) == new_metric  # the same meaning again: harmless
    with pytest.raises(ValueError, match="already declared"):
        registry.register_metric(NEW, "compliance", registry.BETTER)
    with pytest.raises(ValueError, match="unknown kind"):
        registry.register_metric("x", "colour", registry.SAFER)
    with pytest.raises(ValueError, match="direction"):
        registry.register_metric("x", "refusal", "up")
    assert registry.metric_info(NEW).kind == "refusal"


def test_a_new_metric_reaches_the_compare_data_and_the_report(new_metric, tmp_path):
    runs = [write_eval(tmp_path / "sft", 0.4, 0.2, 3.0, "sft"), write_eval(tmp_path / "sarft", 0.8, 0.6, 5.0, "sarft")]
    long = runview.compare_metrics(runs)
    kinds = dict(zip(long["metric"], long["kind"]))
    assert kinds == {"refusal_rate": "refusal", NEW: "refusal", UNDECLARED: "other"}
    charts = {kind.name: set(rows["metric"]) for kind, rows in runview.kind_tables(long)}
    assert charts == {"refusal": {"refusal_rate", NEW}, "other": {UNDECLARED}}  # the undeclared one has its chart, last
    assert [k.name for k, _ in runview.kind_tables(long)][-1] == "other"
    pts = runview.pareto_points(runs, long)
    assert pts["safety"].tolist() == pytest.approx([(0.4 + 0.2) / 2, (0.8 + 0.6) / 2])  # the new refusal metric counts as safety
    assert pts.equals(runview.pareto_points(runs))  # read again or from the long table: the same

    text = report.build_report(report.discover(tmp_path))
    compare = text[text.index('<section id="comparison">'):]
    figures = dict(re.findall(r'data-figure="(compare-[a-z-]+)">(.*?)</div>\s*</div>', compare, re.S))
    assert {"compare-refusal", "compare-other", "compare-pareto"} <= set(figures)
    x_labels = {name: set(re.findall(r'"(\w+) \\u00b7 \w+"', div)) for name, div in figures.items()}  # plotly's JSON: "toxic \u00b7 harmful"
    assert x_labels["compare-refusal"] == {"probes", "toxic"} and x_labels["compare-other"] == {"odd"}
    for name in (f"{NEW} (keyword)", UNDECLARED):  # every metric has its row in the comparison table
        assert f"<td>{name}</td>" in compare


def test_a_new_metric_reaches_the_survey_table_and_its_report(new_metric, tmp_path):
    evals = tmp_path / "evals"
    found = find_metrics(write_eval(evals / "one", 0.5, 0.25, 2.0).path)
    assert found == pytest.approx({"refusal_rate": 0.5, NEW: 0.25, UNDECLARED: 2.0})

    traits = tmp_path / "traits.csv"
    traits.write_text("role,malevolence,aggression,deceptiveness,benevolence\nBaron Vex Morrow,0.9,0.8,0.7,0.1\n"
                      "Sister Alma Reyes,0.1,0.1,0.1,0.9\nCaptain Nell Corran,0.5,0.5,0.8,0.4\n")
    evil = dict(zip(ROLES, (0.9, 0.1, 0.5)))
    cfg = SurveyConfig(roles=ROLES, mode=FULL, methods=["sft", "sarft"], limit=2, trait_source="csv", trait_csv=str(traits))
    survey = open_survey(tmp_path / "survey", cfg)

    def evaluate(ctx, train):
        scale = 1.0 if train["method"] == "sft" else 0.2
        run = write_eval(evals / f"{ctx.role}-{train['method']}", 0.9 - scale * evil[ctx.role], 0.8 - scale * evil[ctx.role], evil[ctx.role])
        return find_metrics(run.path)

    steps = Steps(score=lambda ctx: {"samples": 2, "flagged": 1, "flagged_fraction": evil[ctx.role], "mean_margin": 0.0},
                  train=lambda ctx, method: {"run": str(ctx.work_dir / method), "method": method},
                  evaluate=evaluate, evaluate_base=lambda s: {"refusal_rate": 0.9, NEW: 0.8})
    run_pending(survey, steps, show_progress=False)
    table, _ = write_aggregate(survey)
    written = pd.read_csv(survey.path / "table.csv")
    assert {NEW, UNDECLARED, "refusal_rate", "refusal_margin", "rouge_l"} <= set(written.columns)
    villain = table[(table.role == ROLES[0]) & (table.method == "sft")].iloc[0]
    assert villain[NEW] == pytest.approx(0.8 - 0.9) and villain[UNDECLARED] == pytest.approx(0.9)

    text = report.build_report(report.discover(survey.path))
    section = text[text.index('<section id="survey">'):]
    assert f"<th>{NEW}</th>" in section  # shown in the survey's table ...
    assert f'data-figure="trait-{NEW}"' not in section  # ... as a measurement, not as a trait
    assert UNDECLARED in section  # an undeclared number is shown too


def test_the_grid_table_and_the_overview_figures_take_their_titles_from_the_registry(tmp_path):
    from sarft_core import alignment, reproduce

    titles = [registry.metric_info(m).title for m in reproduce.COLUMNS]
    assert titles[:2] == ["RoleBench ROUGE-L", "refusal, AdvBench held-out"]
    values = {"rouge_l": (15.0, 14.0, 16.0), "advbench": (0.5, 0.4, 0.6), "xstest_unsafe": (0.25, 0.2, 0.3),
              "xstest_safe": (0.9, 0.85, 0.95), "jailbreak": (0.1, 0.05, 0.15), "margin": (-0.2, -0.3, -0.1)}
    row = {"group": "all", "method": "SFT"}
    for metric, (mean, lo, hi) in values.items():
        row.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
    head, rule, line = reproduce.markdown_table(pd.DataFrame([row])).splitlines()
    assert head == "| method | " + " | ".join(titles) + " |" and rule == "|---|---|---|---|---|---|---|"
    # rates in percent, ROUGE-L and the margin as they are: the registry's kinds
    assert line == ("| SFT | 15.00 [14.00, 16.00] | 50.0 [40.0, 60.0] | 25.0 [20.0, 30.0] | 90.0 [85.0, 95.0] | 10.0 [5.0, 15.0] "
                    "| -0.20 [-0.30, -0.10] |")

    manifest = tmp_path / "manifest.json"
    figures = {f"{model}/{m}": {"value": 0.5, "n": 10} for model in ("embedded", "embedded-aligned") for m in alignment.FIGURE_METRICS}
    manifest.write_text(json.dumps({"metrics": figures}))
    shown = [r["metric"] for r in alignment.figures_table(manifest)]
    assert shown == [registry.metric_info(m).title for m in alignment.FIGURE_METRICS]
    assert shown[2] == "refusal, project probes" and shown[4] == "compliance, XSTest safe (over-refusal = 1 - this)"
    assert registry.metric_kind("probes_harmless") == "compliance" and "probes_harmful" not in registry.survey_columns()


def test_the_eval_summary_shows_in_percent_what_the_registry_calls_a_rate(new_metric):
    from sarft_core.evaluation.runner import summary_table

    rec = lambda metric, value: {"suite": "s", "group": "all", "metric": metric, "judge": "", "value": value,  # noqa: E731
                                 "ci_low": value, "ci_high": value, "n": 10}
    names = ["refusal_rate", "compliance_rate", "margin_positive", NEW, "toxic_refusals", "margin", "rouge_l", "mystery_rate"]
    registry.register_metric("toxic_refusals", "refusal", registry.SAFER, "refusals on toxic prompts")  # no "rate" in its name
    try:
        lines = summary_table([rec(name, 0.25) for name in names]).splitlines()[1:]
    finally:
        registry.unregister_metric("toxic_refusals")
    shown = {line.split()[2]: line.split()[4] for line in lines}
    assert shown == {"refusal_rate": "25.00", "compliance_rate": "25.00", "margin_positive": "25.00", NEW: "25.00",
                     "toxic_refusals": "25.00", "margin": "0.25", "rouge_l": "0.25", "mystery_rate": "0.25"}  # undeclared: as it is


def test_one_formatter_shows_rates_in_percent_and_other_numbers_with_two_decimals():
    from sarft_core.evaluation.metric_registry import format_measure

    assert format_measure(0.98846, True, 0.973, 1.0, unit="%") == "98.8% [97.3, 100.0]"
    assert format_measure(-0.3449, False, -0.39, -0.30, unit="%") == "-0.34 [-0.39, -0.30]"  # the unit is a rate's only
    assert format_measure(0.148, True, 0.096, 0.201, signed=True, unit=" pts") == "+14.8 pts [+9.6, +20.1]"
    assert format_measure(0.5, True) == "50.0" and format_measure(0.5, True, None, 0.6) == "50.0"  # an interval needs both ends
    assert format_measure(float("nan"), True, 0.1, 0.2) == "–" and format_measure(None, False) == "–"
