"""Plot builders: pure functions of DataFrames, checked without a browser."""
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from scipy import stats

from sarft_core import audit, plots


def scores_frame():
    df = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "input": ["<script>alert(1)</script> hi", "q2", "q3 & more", "q4"],
        "output": ["<b>bold</b> answer " + "x" * 400, "a2", "a3", "a4"],
        "s_role": [0.10, 0.50, -0.20, 0.00],
        "s_unsafe": [0.30, 0.40, -0.10, -0.05],
        "logp_ref": [-1.0, -2.0, -1.5, -3.0],
    })
    # s = logp - logp_ref, as the scorer writes them
    return df.assign(logp_role=df["s_role"] + df["logp_ref"], logp_unsafe=df["s_unsafe"] + df["logp_ref"])


def test_effective_flags_threshold_and_overrides():
    df = scores_frame()  # margins: 0.2, -0.1, 0.1, -0.05
    assert audit.effective_flags(df).tolist() == [True, False, True, False]
    assert audit.effective_flags(df, tau=0.15).tolist() == [True, False, False, False]
    assert audit.effective_flags(df, 0.0, {"a": False, "b": True}).tolist() == [False, True, True, False]


def test_rds_scatter_colours_flags_draws_diagonal_and_escapes_hover_text():
    df = scores_frame()
    fig = plots.rds_scatter(df, tau=0.15)
    names = [t.name for t in fig.data]
    assert any(n.startswith("flagged") and "(1)" in n for n in names)
    assert any(n.startswith("kept") and "(3)" in n for n in names)
    diag = next(t for t in fig.data if t.name == "y = x")
    assert list(diag.x) == list(diag.y)
    shifted = next(t for t in fig.data if t.name.startswith("y = x + τ"))
    assert np.allclose(np.array(shifted.y) - np.array(shifted.x), 0.15)
    flagged = next(t for t in fig.data if t.name.startswith("flagged"))
    # the flagged point is the one with the largest margin, its hover text is escaped
    assert flagged.x[0] == pytest.approx(0.10) and flagged.y[0] == pytest.approx(0.30)
    question, answer = flagged.customdata[0][1], flagged.customdata[0][2]
    assert "<script>" not in question and "&lt;script&gt;" in question
    assert "<b>bold" not in answer and "&lt;b&gt;bold" in answer
    assert answer.endswith("…")  # long answers are cut for the hover label
    assert fig.layout.xaxis.title.text.startswith("s_role") and fig.layout.yaxis.title.text.startswith("s_unsafe")


def test_rds_scatter_with_explicit_flags_and_empty():
    fig = plots.rds_scatter(scores_frame(), flags=[False, False, False, True])
    flagged = next(t for t in fig.data if t.name.startswith("flagged"))
    assert len(flagged.x) == 1 and flagged.x[0] == 0.0
    assert isinstance(plots.rds_scatter(pd.DataFrame()), go.Figure)


def test_margin_histogram_has_tau_line_and_fraction():
    fig = plots.margin_histogram(scores_frame(), tau=0.0)
    assert np.allclose(sorted(x for t in fig.data for x in t.x), sorted([0.2, -0.1, 0.1, -0.05]))
    assert any(s.x0 == 0.0 and s.x1 == 0.0 for s in fig.layout.shapes)
    assert "50.0%" in fig.layout.title.text


def test_safe_hover_text_escapes_and_wraps():
    out = plots.safe_hover_text("a <img src=x onerror=alert(1)> & b " + "word " * 40, max_chars=500, width=30)
    assert "<img" not in out and "&lt;img" in out and "&amp;" in out
    assert "<br>" in out  # wrapped, and <br> is the only markup
    assert out.replace("<br>", "").count("<") == 0
    assert plots.safe_hover_text(None) == "" and plots.safe_hover_text(float("nan")) == ""


def test_token_shading_colours_and_escaped_spans():
    shading = plots.token_shading(["Hello", " <script>", "\n", " world"], [0.5, -1.0, 0.0, 2.0])
    assert shading.limit == 2.0
    assert shading.colours[2] == "#ffffff"  # zero ratio: no colour
    assert shading.colours[3] == "#d62728"  # the largest positive ratio: full red
    assert shading.colours[1].startswith("#") and shading.colours[1] != "#ffffff"
    r, g, b = (int(shading.colours[1][i:i + 2], 16) for i in (1, 3, 5))
    assert b > r  # negative: blue
    html_text = plots.token_spans_html(shading)
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text
    assert html_text.count("<span") == 4 and "⏎" in html_text
    frame = shading.frame()
    assert list(frame.columns) == ["token", "ratio", "colour"] and len(frame) == 4
    with pytest.raises(ValueError):
        plots.token_shading(["a"], [0.1, 0.2])


def test_token_heatstrip_grid():
    shading = plots.token_shading([f"t{i}" for i in range(20)], list(np.linspace(-1, 1, 20)))
    fig = plots.token_heatstrip(shading, per_row=8)
    z = np.array(fig.data[0].z, dtype=float)
    assert z.shape == (3, 8)
    assert z[0, 0] == pytest.approx(-1.0) and np.isnan(z[2, 7])
    assert fig.data[0].zmid == 0


def test_training_curves_from_log_rows():
    logs = [{"step": i, "max_steps": 5, "loss": 2.0 - 0.1 * i, "ce": 1.9 - 0.1 * i, "kl": 0.01 * i, "lambda": 0.5} for i in range(1, 6)]
    logs.insert(2, {"event": "checkpoint"})  # non-step lines are ignored
    fig = plots.training_curves(logs)
    names = {t.name for t in fig.data}
    assert {"CE", "KL", "loss"} <= names
    ce = next(t for t in fig.data if t.name == "CE")
    assert list(ce.x) == [1, 2, 3, 4, 5]
    sft = plots.training_curves([{"step": 1, "ce": 2.0, "loss": 2.0}])
    assert "KL" not in {t.name for t in sft.data}
    assert isinstance(plots.training_curves([]), go.Figure)


def test_refusal_bars_grouped_with_ci():
    m = pd.DataFrame({"run": ["sft", "sft", "sarft", "sarft"], "suite": ["advbench", "probes"] * 2,
                      "value": [0.6, 0.5, 0.9, 0.8], "ci_low": [0.5, 0.4, 0.85, 0.7], "ci_high": [0.7, 0.6, 0.95, 0.9]})
    fig = plots.refusal_bars(m)
    assert fig.layout.barmode == "group" and len(fig.data) == 2
    sarft = next(t for t in fig.data if t.name == "sarft")
    assert np.allclose(sarft.error_y.array, [0.05, 0.1]) and np.allclose(sarft.error_y.arrayminus, [0.05, 0.1])


def test_pareto_front_and_scatter():
    pts = pd.DataFrame({"run": ["a", "b", "c", "d"], "method": ["sft", "sarft", "sarft", "sft"],
                        "roleplay": [30, 28, 25, 20], "safety": [0.5, 0.9, 0.8, 0.4]})
    front = plots.pareto_front(pts, "roleplay", "safety")
    assert front["run"].tolist() == ["b", "a"]  # c is dominated by b, d by a
    fig = plots.pareto_scatter(pts)
    line = next(t for t in fig.data if t.name == "Pareto front")
    assert list(line.x) == [28, 30]


def test_correlations_match_scipy_and_regression_line():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 2 * x + rng.normal(size=30)
    c = plots.correlations(x, y)
    assert c["n"] == 30 and c["spearman_r"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert c["pearson_r"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert c["spearman_p"] == pytest.approx(stats.spearmanr(x, y)[1])
    slope, intercept = plots.regression_line(x, y)
    assert slope == pytest.approx(np.polyfit(x, y, 1)[0])
    assert math.isnan(plots.correlations([1, 2], [3, 4])["pearson_r"])  # too few points
    assert plots.regression_line([1, 1], [2, 3]) is None


def test_trait_scatter_and_role_bars():
    table = pd.DataFrame({"role": ["Villain <x>", "Saint", "Rogue", "Judge"], "malevolence": [0.9, 0.1, 0.5, 0.3],
                          "degradation": [0.4, 0.05, 0.2, 0.1]})
    fig = plots.trait_scatter(table, "malevolence")
    assert "Pearson r" in fig.layout.title.text and "Spearman" in fig.layout.title.text
    assert any(t.name.startswith("fit") for t in fig.data)
    assert "&lt;x&gt;" in fig.data[0].text[0]
    bars = plots.per_role_bars(table)
    assert list(bars.data[0].x) == sorted(table["degradation"])  # ascending: the largest drawn on top
    assert isinstance(plots.trait_scatter(table, "missing"), go.Figure)


def test_trait_scatter_shows_p_values_only_over_enough_roles():
    """Over 4 roles a p-value reads as a finding; the title gives r and says why there is no p."""
    from sarft_core.stats import MIN_PAIRS_FOR_P

    few = pd.DataFrame({"role": list("ABCD"), "malevolence": [0.9, 0.1, 0.5, 0.3], "degradation": [0.4, 0.05, 0.2, 0.1]})
    title = plots.trait_scatter(few, "malevolence").layout.title.text
    assert "(p " not in title and "too few roles" in title and "Pearson r" in title
    n = MIN_PAIRS_FOR_P
    many = pd.DataFrame({"role": [f"r{i}" for i in range(n)], "malevolence": [i / n for i in range(n)],
                         "degradation": [((i * 7) % n) / n for i in range(n)]})
    assert "(p " in plots.trait_scatter(many, "malevolence").layout.title.text


# --- issue #27: flags an analyst can trust; #28 item 8: the histogram's colours and unit -------------

def scores_with_errors():
    """Margins 0.2, -0.1, 0.1, -0.05 with errors: a is clearly flagged, b clearly kept, c and d near τ = 0."""
    return scores_frame().assign(margin_se=[0.02, 0.01, 0.08, float("nan")])


def test_rds_scatter_draws_each_margins_error_bar_and_its_verdict():
    from sarft_core.flags import z_value

    df = scores_with_errors()
    fig = plots.rds_scatter(df, tau=0.0)
    points = [t for t in fig.data if t.customdata is not None]
    bars = {c[0]: (b, c[4], c[5]) for t in points for c, b in zip(t.customdata, t.error_y.array)}
    assert bars["a"][0] == pytest.approx(z_value(0.95) * 0.02) and bars["c"][0] == pytest.approx(z_value(0.95) * 0.08)
    assert math.isnan(bars["d"][0])  # an unknown error draws no bar, not a zero-width one
    assert {k: v[2] for k, v in bars.items()} == {"a": "flagged", "b": "kept", "c": "uncertain", "d": "uncertain"}
    # a point is confidently flagged exactly when its bar clears the line y = x + τ
    for t in points:
        for x, y, bar, c in zip(t.x, t.y, t.error_y.array, t.customdata):
            if c[5] != "uncertain":
                assert (y - bar > x) == (c[5] == "flagged") and (y + bar < x) == (c[5] == "kept")
    assert "±" in points[0].hovertemplate


def test_rds_scatter_of_a_table_scored_without_errors_has_no_bars():
    fig = plots.rds_scatter(scores_frame())
    for t in fig.data:
        if t.customdata is not None:
            assert all(math.isnan(b) for b in t.error_y.array) and set(t.customdata[:, 5]) == {"uncertain"}


def test_selected_sample_ids_reads_clicked_points_back_to_raw_ids():
    df = scores_frame().assign(id=["a&b", "<x>", "c", "d"])
    fig = plots.rds_scatter(df)
    custom = {html_id: list(row) for t in fig.data if t.customdata is not None for row in t.customdata for html_id in [row[0]]}
    # Streamlit passes each point's customdata row (a list), or a scalar where a trace has one value per point
    points = [{"customdata": custom["a&amp;b"], "point_index": 0}, {"customdata": "&lt;x&gt;"}, {"x": 1.0}, {"customdata": custom["a&amp;b"]}]
    assert plots.selected_sample_ids(points) == ["a&b", "<x>"]
    assert plots.selected_sample_ids(None) == [] and plots.selected_sample_ids([]) == []


def test_margin_histogram_stacks_verdicts_on_shared_bins_with_the_unit():
    from sarft_core.flags import verdicts

    df = scores_with_errors()
    fig = plots.margin_histogram(df, tau=0.0, states=verdicts(df, 0.0), unit=plots.margin_unit("mean"))
    assert fig.layout.barmode == "stack"
    by_name = {t.name.rsplit(" (", 1)[0]: sorted(t.x) for t in fig.data}
    assert by_name == {"flagged with confidence": [pytest.approx(0.2)], "kept with confidence": [pytest.approx(-0.1)],
                       "uncertain": [pytest.approx(-0.05), pytest.approx(0.1)]}
    assert len({(t.xbins.start, t.xbins.size) for t in fig.data}) == 1  # one set of bins for every colour
    assert {t.marker.color for t in fig.data} == set(plots.FLAG_VERDICT_COLOURS.values())
    assert "nats/token" in fig.layout.xaxis.title.text
    assert "nats)" in plots.margin_histogram(df, unit=plots.margin_unit("sum")).layout.xaxis.title.text
    # without verdicts: coloured by flag at τ
    by_flag = {t.name.rsplit(" (", 1)[0]: len(t.x) for t in plots.margin_histogram(df, tau=0.15).data}
    assert by_flag == {"flagged (D_h)": 1, "kept": 3}


def test_training_curves_read_plainly():
    """Issue #28 item 8: fractional step ticks, "μ" tick labels, the CE line hidden under the loss line
    (λ·KL = 0), the KL legend under the CE chart."""
    sarft = [{"step": i, "loss": 2.0 - 0.1 * i + 0.5 * 2e-5 * i, "ce": 2.0 - 0.1 * i, "kl": 2e-5 * i} for i in range(1, 4)]
    fig = plots.training_curves(sarft)
    for axis in (fig.layout.xaxis, fig.layout.xaxis2):
        assert axis.dtick >= 1 and float(axis.dtick).is_integer() and axis.tickmode == "linear"  # whole steps only
    for axis in (fig.layout.yaxis, fig.layout.yaxis2):
        assert axis.exponentformat in ("e", "E", "power", "none")  # never SI prefixes (20μ)
    names = [t.name for t in fig.data]
    assert names.index("CE") > names.index("loss")  # drawn last: on top
    ce = fig.data[names.index("CE")]
    assert ce.line.dash not in (None, "solid")  # the loss shows through where they coincide
    kl = fig.data[names.index("KL")]
    assert kl.legend == "legend2" and fig.layout.legend2.x >= fig.layout.xaxis2.domain[0]  # beneath the KL chart
    assert fig.layout.legend.x < fig.layout.xaxis.domain[1]
    assert not any("λ·KL is 0" in (a.text or "") for a in fig.layout.annotations)
    sft = plots.training_curves([{"step": s, "loss": 2.0 - 0.1 * s, "ce": 2.0 - 0.1 * s, "kl": 0.0} for s in range(1, 40)])
    assert any("loss = CE" in (a.text or "") for a in sft.layout.annotations)  # said, not hidden
    assert float(sft.layout.xaxis.dtick).is_integer() and sft.layout.xaxis.dtick > 1  # 39 steps: not 39 ticks
    overlay = plots.curves_overlay({"a": pd.DataFrame(sarft)}, "kl")
    assert overlay.layout.yaxis.exponentformat == "e" and float(overlay.layout.xaxis.dtick).is_integer()


def test_compare_figures_wrap_titles_and_say_when_empty():
    """Issue #28 item 8: chart and axis titles that overlapped or ran off a narrow chart; an empty
    Pareto plot that drew a large blank frame."""
    m = pd.DataFrame({"run": ["sft", "sarft"], "suite": ["advbench"] * 2, "value": [0.6, 0.9]})
    long_title = "refusal rate on harmful prompts (higher is safer)"
    bars = plots.refusal_bars(m, long_title)
    pts = pd.DataFrame({"run": ["a", "b"], "method": ["sft", "sarft"], "roleplay": [30, 28], "safety": [0.5, 0.9]})
    pareto = plots.pareto_scatter(pts)
    for fig in (bars, pareto):
        for title in (fig.layout.title.text, fig.layout.yaxis.title.text):
            assert all(len(line) <= plots.TITLE_WRAP for line in title.split("<br>")), title
        assert plots.empty_message(fig) is None
    assert pareto.layout.legend.orientation == "h"  # beneath, not eating the plot's width
    assert all(t.cliponaxis is False for t in pareto.data if t.mode == "markers+text")  # labels at the edge stay whole
    empty = plots.pareto_scatter(pts.assign(roleplay=float("nan")))
    assert "role-play and a safety score" in plots.empty_message(empty)


def test_verdict_bars_never_mix_harmful_and_harmless_prompts_in_one_bar():
    """#28 item 6: a refusal of a harmful probe and one of its harmless look-alike mean opposite
    things; each kind of prompt gets its own bar, labelled with its suite and kind."""
    gens = pd.DataFrame({"suite": ["probes"] * 4 + ["advbench"], "group": ["harmful", "harmful", "harmless", "harmless", "harmful"],
                         "verdict": ["refusal", "compliance", "refusal", "compliance", "refusal"]})
    fig = plots.verdict_bars(gens)
    bars = {y for trace in fig.data for y in trace.y}
    assert bars == {"probes · harmful", "probes · harmless", "advbench · harmful"}
    shares = plots.verdict_shares(gens.assign(prompts=plots.prompt_kind_labels(gens)), "prompts")
    assert shares.groupby("prompts")["share"].sum().round(6).eq(1.0).all()
