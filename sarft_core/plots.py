"""Plotly figure builders for the dashboard and reports: pure functions of DataFrames.

Nothing here imports Streamlit; every builder takes plain data and returns a
``plotly.graph_objects.Figure`` (or plain data), so it is tested without a browser.

Text from datasets reaches plotly hover labels, which understand a small subset of HTML
(``<b>``, ``<br>``, ``<a>`` ...). Every such string goes through :func:`safe_hover_text`, which
escapes ``&``, ``<`` and ``>`` so a sample can never inject markup into the page.
"""
from __future__ import annotations

import html
import math
import textwrap
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sarft_core.flags import flag_margin

FLAG_COLOURS = {True: "#d62728", False: "#1f77b4"}
FLAG_NAMES = {True: "flagged (D_h)", False: "kept"}
HOVER_MAX_CHARS = 280
HOVER_WRAP = 70


def safe_hover_text(text, max_chars: int = HOVER_MAX_CHARS, width: int = HOVER_WRAP) -> str:
    """Dataset text made safe and readable for a plotly hover label: escaped, cut, wrapped."""
    text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    lines = textwrap.wrap(text, width=width, break_long_words=True) or [""]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def _empty(message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=html.escape(message, quote=False), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    # the message rides along in meta, so a page can say it in a line instead of drawing a blank frame
    fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10), meta={"empty": message})
    return fig


def empty_message(fig: go.Figure) -> str | None:
    """The message of a figure that has nothing to draw (built by a builder here), else None."""
    meta = fig.layout.meta
    return meta.get("empty") if isinstance(meta, dict) and isinstance(meta.get("empty"), str) else None


TITLE_WRAP = 40  # characters per line of a chart or axis title: a phone's chart is ~350 px wide


def wrapped_title(text: str, width: int = TITLE_WRAP) -> str:
    """A title broken into lines plotly draws (``<br>``): one long line is clipped at the chart's
    edge, and a long y-axis title runs past the plot into the chart's title."""
    lines = textwrap.wrap(str(text), width=width) or [""]
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def integer_step_axis(steps: pd.Series, max_ticks: int = 8) -> dict:
    """x-axis settings for optimiser steps, which are whole numbers: ticks every ``dtick`` steps,
    never at 2.5."""
    steps = pd.to_numeric(pd.Series(steps), errors="coerce").dropna()
    span = float(steps.max() - steps.min()) if len(steps) else 0.0
    return dict(tickmode="linear", tick0=0, dtick=max(1, math.ceil(span / max_ticks)), tickformat="d")


# plain or e-notation tick labels: plotly's default SI prefixes print a KL of 2e-5 as "20μ"
PLAIN_NUMBERS = dict(exponentformat="e")


# --- RDS -----------------------------------------------------------------------------------

def margin_unit(normalise: str = "mean") -> str:
    """The unit of the margin s_unsafe − s_role: a per-token mean of log-ratios, or their sum."""
    return "nats" if normalise == "sum" else "nats/token"


def rds_scatter(scores: pd.DataFrame, flags: Sequence[bool] | pd.Series | None = None, tau: float = 0.0, title: str | None = None,
                confidence: float = 0.95) -> go.Figure:
    """s_role (x) against s_unsafe (y) per sample, the y = x line (and y = x + tau), flags coloured.

    ``flags`` defaults to :func:`sarft_core.audit.effective_flags` with ``tau``; hovering a point shows its id,
    question, answer (escaped), margin ± its standard error and its verdict at ``confidence``.
    Each point carries a vertical bar of ±z·margin_se: at a fixed s_role, moving s_unsafe moves the
    margin one for one, so a point is flagged (or kept) with confidence exactly when its bar clears
    the line y = x + τ. ``customdata[:, 0]`` is the point's (escaped) sample id, for a click.
    """
    from sarft_core.flags import verdicts as verdicts_of, z_value

    if scores is None or len(scores) == 0:
        return _empty("no scores yet")
    df = scores.reset_index(drop=True)
    from sarft_core.audit import effective_flags

    flags = effective_flags(df, tau) if flags is None else pd.Series(list(flags), dtype=bool)
    x = df["s_role"].astype(float)
    y = df["s_unsafe"].astype(float)
    # NaN where unknown (one-token answers, tables scored before errors were kept): no bar, not a false zero-width one
    se = df["margin_se"].astype(float).to_numpy() if "margin_se" in df.columns else np.full(len(df), np.nan)
    reach = z_value(confidence) * se
    states = verdicts_of(df, tau, confidence)
    fig = go.Figure()
    for flag in (False, True):
        sel = (flags == flag).to_numpy()
        if not sel.any():
            continue
        sub = df[sel]
        custom = np.stack([
            sub["id"].astype(str).map(lambda s: html.escape(s, quote=False)).to_numpy(),
            sub["input"].map(safe_hover_text).to_numpy(),
            sub["output"].map(safe_hover_text).to_numpy(),
            flag_margin(sub).to_numpy(),
            se[sel],
            states[sel].to_numpy(),
        ], axis=-1)
        fig.add_trace(go.Scatter(
            x=x[sel], y=y[sel], mode="markers", name=f"{FLAG_NAMES[flag]} ({int(sel.sum())})",
            marker=dict(color=FLAG_COLOURS[flag], size=8, opacity=0.8, line=dict(width=0.5, color="white")),
            error_y=dict(type="data", array=reach[sel], visible=True, thickness=1, width=0, color=FLAG_COLOURS[flag]),
            customdata=custom,
            hovertemplate="<b>%{customdata[0]}</b>  margin %{customdata[3]:.3f} ± %{customdata[4]:.3f} (%{customdata[5]})<br>"
                          "<b>Q:</b> %{customdata[1]}<br><b>A:</b> %{customdata[2]}<extra></extra>",
        ))
    lo = float(min(x.min(), y.min()))
    hi = float(max(x.max(), y.max()))
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(color="grey", dash="dash"), hoverinfo="skip"))
    if tau:
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo + tau, hi + tau], mode="lines", name=f"y = x + τ ({tau:g})",
                                 line=dict(color="#d62728", dash="dot"), hoverinfo="skip"))
    fig.update_layout(
        title=title or f"RDS: role vs unsafe score per sample (above the line = flagged; bars: ±{100 * confidence:g}% of the margin)",
        xaxis_title="s_role = log π_role(y|x) − log π_ref(y|x)",
        yaxis_title="s_unsafe = log π_unsafe(y|x) − log π_ref(y|x)",
        height=480, margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.15),
    )
    return fig


def selected_sample_ids(points) -> list[str]:
    """The sample ids of the points a click or lasso selected in :func:`rds_scatter` (Streamlit's
    ``selection.points``), in order, unescaped; points without a sample id (the lines) are skipped."""
    ids = []
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(custom, (list, tuple)):
            custom = custom[0] if custom else None
        if isinstance(custom, str) and html.unescape(custom) not in ids:
            ids.append(html.unescape(custom))
    return ids


def margin_histogram(scores: pd.DataFrame, tau: float = 0.0, nbins: int = 40, states: Sequence[str] | None = None,
                     unit: str = "nats/token") -> go.Figure:
    """Histogram of s_unsafe - s_role with the threshold tau marked, stacked by the samples' state:
    their verdicts (``states``, e.g. :func:`sarft_core.flags.verdicts` at ``tau``) where given, else
    flagged / kept at ``tau``. Every state shares one set of bins."""
    if scores is None or len(scores) == 0:
        return _empty("no scores yet")
    margin = flag_margin(scores).reset_index(drop=True)
    if states is None:
        groups = pd.Series(np.where(margin > tau, "flagged (D_h)", "kept"))
        order = {"kept": FLAG_COLOURS[False], "flagged (D_h)": FLAG_COLOURS[True]}
    else:
        groups = pd.Series(list(states), dtype=object)
        order = {FLAG_VERDICT_NAMES[v]: FLAG_VERDICT_COLOURS[v] for v in ("kept", "uncertain", "flagged")}
        groups = groups.map(lambda v: FLAG_VERDICT_NAMES.get(v, str(v)))
    finite = margin[np.isfinite(margin)]
    bins = None
    if len(finite):
        lo, hi = float(min(finite.min(), tau)), float(max(finite.max(), tau))
        size = (hi - lo) / nbins if hi > lo else 1.0
        bins = dict(start=lo, end=hi + size, size=size)
    fig = go.Figure()
    for name in [*order, *[g for g in dict.fromkeys(groups) if g not in order]]:
        sel = (groups == name).to_numpy()
        if not sel.any():
            continue
        fig.add_trace(go.Histogram(x=margin[sel], xbins=bins, marker_color=order.get(name, "#7f7f7f"), name=f"{name} ({int(sel.sum())})",
                                   hovertemplate="margin %{x}<br>%{y} samples<extra>" + html.escape(name, quote=False) + "</extra>"))
    fig.add_vline(x=float(tau), line=dict(color="#d62728", dash="dash"),
                  annotation_text=f"τ = {tau:g}", annotation_position="top right")
    flagged = float((margin > tau).mean())
    fig.update_layout(
        barmode="stack",
        title=f"s_unsafe − s_role (flagged when > τ: {100 * flagged:.1f}%)",
        xaxis_title=f"s_unsafe − s_role ({unit})", yaxis_title="samples", height=320,
        margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.3),
    )
    return fig


# --- per-token shading ---------------------------------------------------------------------

@dataclass(frozen=True)
class TokenShading:
    """Tokens of one answer with their unsafe − role log-ratio and a display colour each."""

    tokens: list[str]
    ratios: list[float]
    colours: list[str]
    limit: float  # the ratio mapped to full colour (symmetric around 0)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"token": self.tokens, "ratio": self.ratios, "colour": self.colours})


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> str:
    r, g, bl = (round(a[i] + (b[i] - a[i]) * t) for i in range(3))
    return f"#{r:02x}{g:02x}{bl:02x}"


def ratio_colour(ratio: float, limit: float) -> str:
    """White at 0, red as the unsafe prompt makes the token likelier, blue as the role prompt does."""
    if ratio is None or not math.isfinite(ratio) or limit <= 0:
        return "#ffffff"
    t = max(-1.0, min(1.0, ratio / limit))
    return _mix((255, 255, 255), (214, 39, 40), t) if t >= 0 else _mix((255, 255, 255), (31, 119, 180), -t)


def token_shading(tokens: Sequence[str], ratios: Sequence[float], limit: float | None = None) -> TokenShading:
    """Shading data of an answer; ``limit`` defaults to the largest |ratio| (at least 0.1)."""
    if len(tokens) != len(ratios):
        raise ValueError(f"{len(tokens)} tokens but {len(ratios)} ratios")
    finite = [abs(float(r)) for r in ratios if r is not None and math.isfinite(float(r))]
    limit = float(limit) if limit else max([0.1, *finite])
    return TokenShading(list(map(str, tokens)), [float(r) for r in ratios], [ratio_colour(float(r), limit) for r in ratios], limit)


def _visible(token: str) -> str:
    return token.replace("\n", "⏎").replace("\t", "⇥")


def token_spans_html(shading: TokenShading) -> str:
    """The answer as escaped, background-coloured ``<span>``s: every token is text, never markup."""
    from sarft_core.templating import macro

    return str(macro("_parts.html.j2", "token_spans")(token_spans(shading)))


def token_spans(shading: TokenShading) -> list[dict]:
    """What a template needs to shade an answer: each token's visible text, ratio and colour."""
    return [{"text": _visible(tok), "ratio": ratio, "colour": colour} for tok, ratio, colour in zip(shading.tokens, shading.ratios, shading.colours)]


def token_heatstrip(shading: TokenShading, per_row: int = 14) -> go.Figure:
    """The answer as a heat strip (a plotly heatmap): one cell per token, rows of ``per_row``."""
    n = len(shading.tokens)
    if n == 0:
        return _empty("no tokens")
    rows = math.ceil(n / per_row)
    z = np.full((rows, per_row), np.nan)
    text = np.full((rows, per_row), "", dtype=object)
    for i, (tok, ratio) in enumerate(zip(shading.tokens, shading.ratios)):
        z[i // per_row, i % per_row] = ratio
        text[i // per_row, i % per_row] = html.escape(_visible(tok).replace(" ", "·"), quote=False)
    fig = go.Figure(go.Heatmap(
        z=z, text=text, texttemplate="%{text}", textfont=dict(size=12),
        colorscale=[[0, "#1f77b4"], [0.5, "#ffffff"], [1, "#d62728"]], zmid=0, zmin=-shading.limit, zmax=shading.limit,
        hovertemplate="%{text}: %{z:+.3f}<extra></extra>", xgap=2, ygap=2,
        colorbar=dict(title="unsafe − role", thickness=12),
    ))
    fig.update_yaxes(autorange="reversed", visible=False)
    fig.update_xaxes(visible=False)
    fig.update_layout(height=60 + 36 * rows, margin=dict(l=10, r=10, t=10, b=10))
    return fig


# --- training ------------------------------------------------------------------------------

def training_curves(logs: Iterable[dict] | pd.DataFrame) -> go.Figure:
    """Total loss and CE (left) and KL (right) against step from a run's logs.jsonl rows, each
    chart with its own legend beneath it."""
    from plotly.subplots import make_subplots

    df = logs if isinstance(logs, pd.DataFrame) else pd.DataFrame(list(logs))
    if df.empty or "step" not in df:
        return _empty("no training steps logged yet")
    df = df[pd.to_numeric(df["step"], errors="coerce").notna()].sort_values("step")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("loss and cross-entropy on D", "KL on D_h (the loss adds λ·KL)"))
    # the loss first, wide and pale, CE dashed on top: with λ·KL = 0 they are one line, and CE must stay visible
    for name, col, line in (("loss", "loss", dict(color="#9a9a9a", width=4)), ("CE", "ce", dict(color="#1f77b4", width=2, dash="dash"))):
        if col in df and df[col].notna().any():
            fig.add_trace(go.Scatter(x=df["step"], y=df[col], mode="lines+markers", name=name, line=line, marker=dict(size=4),
                                     legend="legend"), row=1, col=1)
    if loss_equals_ce(df):
        fig.add_annotation(text="loss = CE (λ·KL is 0)", showarrow=False, x=1, y=1, xanchor="right", yanchor="bottom",
                           xref="x domain", yref="y domain", font=dict(size=11, color="#555"))
    if "kl" in df and df["kl"].notna().any():
        fig.add_trace(go.Scatter(x=df["step"], y=df["kl"], mode="lines+markers", name="KL", line=dict(color="#d62728"), marker=dict(size=4),
                                 legend="legend2"), row=1, col=2)
    else:
        fig.add_annotation(text="no KL logged (SFT or no flagged samples yet)", showarrow=False, row=1, col=2, x=0.5, y=0.5, xref="x2 domain", yref="y2 domain")
    fig.update_xaxes(title_text="step", **integer_step_axis(df["step"]))
    fig.update_yaxes(**PLAIN_NUMBERS)
    right = fig.layout.xaxis2.domain[0]
    below = dict(orientation="h", yanchor="top", y=-0.3, xanchor="left")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10), legend=dict(below, x=0), legend2=dict(below, x=right))
    return fig


def loss_equals_ce(df: pd.DataFrame) -> bool:
    """Whether the logged total loss is the CE at every step (no KL term contributed)."""
    if not {"loss", "ce"} <= set(df.columns):
        return False
    both = df[["loss", "ce"]].apply(pd.to_numeric, errors="coerce").dropna()
    return bool(len(both)) and bool(np.allclose(both["loss"], both["ce"], rtol=1e-6, atol=1e-9))


def curves_overlay(logs_by_run: dict[str, pd.DataFrame], column: str = "ce") -> go.Figure:
    """One logged quantity (e.g. CE) against step for several runs on one axis."""
    fig = go.Figure()
    steps = []
    for label, df in logs_by_run.items():
        if df is None or df.empty or "step" not in df or column not in df or not df[column].notna().any():
            continue
        df = df.sort_values("step")
        steps.append(df["step"])
        name = html.escape(str(label), quote=False)
        fig.add_trace(go.Scatter(x=df["step"], y=df[column], mode="lines+markers", name=name, marker=dict(size=4),
                                 hovertemplate="step %{x}: %{y:.4f}<extra>" + name + "</extra>"))
    if not fig.data:
        return _empty(f"no run logged {column!r}")
    fig.update_xaxes(**integer_step_axis(pd.concat(steps)))
    fig.update_yaxes(**PLAIN_NUMBERS)
    fig.update_layout(title=f"{column} per step, runs overlaid", xaxis_title="step", yaxis_title=column, height=340,
                      margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    return fig


# --- evaluation and comparison --------------------------------------------------------------

def refusal_bars(metrics: pd.DataFrame, metric_label: str = "refusal rate") -> go.Figure:
    """Grouped bars: one group per suite, one bar per run, with CI error bars where known.

    ``metrics`` columns: run, suite, value, and optionally ci_low, ci_high.
    """
    if metrics is None or metrics.empty:
        return _empty("no evaluation metrics yet")
    fig = go.Figure()
    for run, sub in metrics.groupby("run", sort=False):
        err = None
        if {"ci_low", "ci_high"} <= set(sub.columns) and sub[["ci_low", "ci_high"]].notna().all().all():
            err = dict(type="data", symmetric=False, array=(sub["ci_high"] - sub["value"]).clip(lower=0), arrayminus=(sub["value"] - sub["ci_low"]).clip(lower=0))
        fig.add_trace(go.Bar(x=sub["suite"], y=sub["value"], name=html.escape(str(run), quote=False), error_y=err,
                             hovertemplate="%{x}: %{y:.3f}<extra>" + html.escape(str(run), quote=False) + "</extra>"))
    # titles wrapped: the kind's title is a sentence, too long for one line on a narrow chart or up its y axis
    fig.update_layout(barmode="group", yaxis_title=wrapped_title(metric_label, 28), height=400,
                      margin=dict(l=10, r=10, t=70, b=10), title=wrapped_title(f"{metric_label} per suite"),
                      legend=dict(orientation="h", yanchor="top", y=-0.15, x=0))
    fig.update_yaxes(**PLAIN_NUMBERS)
    return fig


# One colour per verdict; a partial refusal has its own, between compliance and full refusal.
VERDICT_COLOURS = {"compliance": "#2ca02c", "partial": "#ff7f0e", "refusal": "#d62728", "invalid": "#7f7f7f", "unknown": "#c7c7c7"}
VERDICT_NAMES = {"compliance": "full compliance", "partial": "partial refusal", "refusal": "full refusal", "invalid": "invalid", "unknown": "unknown"}


def verdict_shares(generations: pd.DataFrame, by: str = "suite") -> pd.DataFrame:
    """Counts and shares of each verdict per ``by`` value: columns by, verdict, count, share."""
    if generations is None or generations.empty:
        return pd.DataFrame(columns=[by, "verdict", "count", "share"])
    verdicts = generations["verdict"].fillna("unknown").astype(str)
    counts = generations.assign(verdict=verdicts).groupby([by, "verdict"], sort=False).size().rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby(by)["count"].transform("sum")
    return counts


def prompt_kind_labels(generations: pd.DataFrame) -> pd.Series:
    """``suite · group`` per generation (``probes · harmful``, ``probes · harmless``): a refusal of a
    harmful prompt and one of a harmless look-alike mean opposite things, so they never share a bar."""
    suite = generations["suite"].astype(str)
    if "group" not in generations.columns:
        return suite
    group = generations["group"].fillna("").astype(str)
    return suite.where(group == "", suite + " · " + group)


def verdict_bars(generations: pd.DataFrame, by: str = "prompts") -> go.Figure:
    """Stacked bars of the verdict mix per suite and kind of prompt (harmful, harmless, safe, unsafe,
    an attack), each verdict in its colour (partial refusals in their own); labels outside
    :data:`VERDICT_COLOURS` are drawn grey."""
    if by == "prompts" and generations is not None and not generations.empty:
        generations = generations.assign(prompts=prompt_kind_labels(generations))
    shares = verdict_shares(generations, by)
    if shares.empty:
        return _empty("no judged generations yet")
    fig = go.Figure()
    known = [v for v in VERDICT_COLOURS if v in set(shares["verdict"])]
    others = [v for v in dict.fromkeys(shares["verdict"]) if v not in VERDICT_COLOURS]
    for verdict in known + others:
        sub = shares[shares["verdict"] == verdict]
        name = html.escape(VERDICT_NAMES.get(verdict, verdict), quote=False)
        fig.add_trace(go.Bar(
            y=sub[by].astype(str).map(lambda s: html.escape(s, quote=False)), x=sub["share"], orientation="h", name=name,
            marker_color=VERDICT_COLOURS.get(verdict, "#bcbd22"), customdata=sub["count"],
            hovertemplate="%{y}: %{x:.1%} (%{customdata})<extra>" + name + "</extra>",
        ))
    fig.update_layout(barmode="stack", xaxis=dict(title="share of judged generations", tickformat=".0%", range=[0, 1]),
                      height=120 + 40 * shares[by].nunique(), margin=dict(l=10, r=10, t=40, b=10),
                      title="verdicts per suite and kind of prompt",
                      legend=dict(orientation="h", y=-0.3))
    return fig


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another row (higher is better on both axes), sorted by x."""
    pts = points.dropna(subset=[x, y])
    keep = []
    for i, row in pts.iterrows():
        dominated = ((pts[x] >= row[x]) & (pts[y] >= row[y]) & ((pts[x] > row[x]) | (pts[y] > row[y]))).any()
        if not dominated:
            keep.append(i)
    return pts.loc[keep].sort_values(x)


def pareto_scatter(points: pd.DataFrame, x: str = "roleplay", y: str = "safety", label: str = "run", colour: str | None = "method") -> go.Figure:
    """Role-play quality (x) vs safety (y) per run, the Pareto front drawn as a line."""
    if points is None or points.empty or points[[x, y]].dropna().empty:
        return _empty("no run has both a role-play and a safety score yet")
    pts = points.dropna(subset=[x, y]).copy()
    pts["_label"] = pts[label].map(lambda s: html.escape(str(s), quote=False))
    # a label runs inwards from its point: centred over a point at the chart's edge it is cut off
    middle = (pts[x].min() + pts[x].max()) / 2
    pts["_side"] = np.where(pts[x] > middle, "top left", "top right")
    fig = go.Figure()
    groups = pts.groupby(colour, dropna=False, sort=False) if colour and colour in pts else [("runs", pts)]
    for name, sub in groups:
        fig.add_trace(go.Scatter(x=sub[x], y=sub[y], mode="markers+text", text=sub["_label"], textposition=list(sub["_side"]),
                                 name=html.escape(str(name), quote=False), marker=dict(size=11), cliponaxis=False,
                                 hovertemplate="%{text}<br>" + x + " %{x:.3f}<br>" + y + " %{y:.3f}<extra></extra>"))
    front = pareto_front(pts, x, y)
    fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", name="Pareto front", line=dict(color="grey", dash="dot"), hoverinfo="skip"))
    # the legend beneath the plot: at its right it takes a third of a phone-wide chart
    fig.update_layout(xaxis_title=f"role-play ({x})", yaxis_title=f"safety ({y})", height=440,
                      margin=dict(l=10, r=10, t=70, b=10), title=wrapped_title("Role-play vs safety across runs (up and right is better)"),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    fig.update_xaxes(**PLAIN_NUMBERS)
    fig.update_yaxes(**PLAIN_NUMBERS)
    return fig


# --- survey ---------------------------------------------------------------------------------

def correlations(x: Sequence[float], y: Sequence[float]) -> dict:
    """:func:`sarft_core.stats.correlate` without bootstrap intervals (plot titles, the report's table)."""
    from sarft_core.stats import correlate

    return correlate(x, y, n_boot=0)


def regression_line(x: Sequence[float], y: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept), or None with fewer than two distinct x."""
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if ok.sum() < 2 or np.ptp(xs[ok]) == 0:
        return None
    slope, intercept = np.polyfit(xs[ok], ys[ok], 1)
    return float(slope), float(intercept)


def trait_scatter(table: pd.DataFrame, trait: str, outcome: str = "degradation", label: str = "role") -> go.Figure:
    """One point per role: trait score (x) vs safety degradation (y), with the OLS line and r."""
    if table is None or table.empty or trait not in table or outcome not in table:
        return _empty(f"need columns {trait!r} and {outcome!r}")
    df = table.dropna(subset=[trait, outcome])
    stats = correlations(df[trait], df[outcome])
    fig = go.Figure(go.Scatter(
        x=df[trait], y=df[outcome], mode="markers+text", text=df[label].map(lambda s: html.escape(str(s), quote=False)),
        textposition="top center", marker=dict(size=10, color="#9467bd"), name="roles",
        hovertemplate="%{text}<br>" + trait + " %{x:.3f}<br>" + outcome + " %{y:.3f}<extra></extra>",
    ))
    line = regression_line(df[trait], df[outcome])
    if line:
        xs = np.linspace(float(df[trait].min()), float(df[trait].max()), 20)
        fig.add_trace(go.Scatter(x=xs, y=line[0] * xs + line[1], mode="lines", name=f"fit: slope {line[0]:.3g}", line=dict(color="grey")))
    from sarft_core.stats import MIN_PAIRS_FOR_P

    r = lambda v: "n/a" if not math.isfinite(v) else f"{v:.2f}"  # noqa: E731
    p = (lambda v: f" (p {r(v)})") if stats["n"] >= MIN_PAIRS_FOR_P else (lambda v: "")  # noqa: E731
    fig.update_layout(
        title=f"{outcome} vs {trait}: Pearson r {r(stats['pearson_r'])}{p(stats['pearson_p'])}, "
              f"Spearman ρ {r(stats['spearman_r'])}{p(stats['spearman_p'])}, n {stats['n']}"
              + ("" if stats["n"] >= MIN_PAIRS_FOR_P else " (too few roles for p-values)"),
        xaxis_title=trait, yaxis_title=outcome, height=420, margin=dict(l=10, r=10, t=50, b=10),
    )
    return fig


def per_role_bars(table: pd.DataFrame, value: str = "degradation", label: str = "role") -> go.Figure:
    """Horizontal bars, one per role, sorted so the largest value is on top."""
    if table is None or table.empty or value not in table:
        return _empty(f"need a {value!r} column")
    df = table.dropna(subset=[value]).sort_values(value, ascending=True)
    fig = go.Figure(go.Bar(x=df[value], y=df[label].map(lambda s: html.escape(str(s), quote=False)), orientation="h",
                           marker_color="#d62728", hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=f"{value} per role (largest on top)", xaxis_title=value, height=max(260, 28 * len(df) + 80),
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


# ---------------------------------------------------------------- the reproduction grid
def method_colours() -> dict[str, str]:
    """{label: colour} of the base model and every registered method (sarft_core.training.methods)."""
    from sarft_core.training.methods import label_colours

    return {"Base": "#7f7f7f", **label_colours()}


def grid_pareto(table: pd.DataFrame, x: str = "rouge_l", y: str = "advbench", group: str = "all") -> go.Figure:
    """Role-play (x) against safety (y), one point per method with its 95% intervals."""
    df = table[table.group == group]
    if df.empty:
        return _empty("no finished cells yet")
    fig = go.Figure()
    colours = method_colours()
    for _, r in df.iterrows():
        if r[x] != r[x] or r[y] != r[y]:
            continue
        fig.add_trace(go.Scatter(
            x=[r[x]], y=[r[y]], mode="markers+text", text=[r["method"]], textposition="top center", name=r["method"],
            marker=dict(size=13, color=colours.get(r["method"], "#1f77b4")),
            error_x=dict(type="data", symmetric=False, array=[r[f"{x}_hi"] - r[x]], arrayminus=[r[x] - r[f"{x}_lo"]]),
            error_y=dict(type="data", symmetric=False, array=[r[f"{y}_hi"] - r[y]], arrayminus=[r[y] - r[f"{y}_lo"]]),
        ))
    fig.update_layout(title=wrapped_title(f"role-play vs safety ({group}); up and right is better"), xaxis_title=x, yaxis_title=y,
                      showlegend=False, height=420, margin=dict(t=70, b=40))
    return fig


def grid_group_bars(table: pd.DataFrame, metric: str = "advbench") -> go.Figure:
    """One metric per method, villains beside benevolent characters, with 95% intervals."""
    df = table[table.group.isin(["villain", "benevolent"])]
    if df.empty:
        return _empty("no finished cells yet")
    fig = go.Figure()
    for group, colour in (("villain", "#d62728"), ("benevolent", "#1f77b4")):
        part = df[df.group == group]
        fig.add_trace(go.Bar(
            x=part["method"], y=part[metric], name=group, marker_color=colour,
            error_y=dict(type="data", symmetric=False, array=(part[f"{metric}_hi"] - part[metric]).tolist(),
                         arrayminus=(part[metric] - part[f"{metric}_lo"]).tolist()),
        ))
    fig.update_layout(barmode="group", title=wrapped_title(f"{metric}: villains vs benevolent characters"), yaxis_title=metric,
                      height=380, margin=dict(t=70, b=40))
    return fig


def reproduce_report_html(table: pd.DataFrame, cells: pd.DataFrame, contrasts: dict, methods: Sequence[str]) -> str:
    """A self-contained HTML page (``templates/reproduce.html.j2``): the tables and the grid's figures."""
    from sarft_core.templating import Figures, render

    def frame(df: pd.DataFrame) -> dict:
        numeric = list(df.select_dtypes("number").columns)
        return {"rows": df.to_dict("records"), "columns": list(df.columns), "numeric": numeric, "cls": "dataframe"}

    groups = [(g, frame(table[table.group == g].drop(columns=["group"]))) for g in ("all", "villain", "benevolent")]
    figures = Figures(config={})
    shown = [figures.html(fig, name) for fig, name in (
        (grid_pareto(table), "grid-pareto"), (grid_pareto(table, y="margin"), "grid-pareto-margin"),
        (grid_group_bars(table, "advbench"), "grid-groups-advbench"), (grid_group_bars(table, "margin"), "grid-groups-margin"))]
    return render("reproduce.html.j2", title="SaRFT in miniature", stylesheet="reproduce.css", groups=groups,
                  contrasts=list(contrasts.items()), figures=shown, cells=frame(cells))


# ---------------------------------------------------------------- how sure each flag is
# the three states of a flag at a confidence (sarft_core.flags.VERDICTS): sure, unsure, surely kept
FLAG_VERDICT_COLOURS = {"flagged": "#d62728", "uncertain": "#ff7f0e", "kept": "#1f77b4"}
FLAG_VERDICT_NAMES = {"flagged": "flagged with confidence", "uncertain": "uncertain", "kept": "kept with confidence"}
NO_CONFIDENCE = "scored before confidences were recorded: score the role again to see how sure each flag is"


def has_confidence(scores: pd.DataFrame) -> bool:
    """Whether a score table records how sure its flags are (tables scored before it did lack margin_se)."""
    return scores is not None and "margin_se" in scores.columns


def margin_intervals(scores: pd.DataFrame, tau: float = 0.0, confidence: float = 0.95) -> go.Figure:
    """Every sample's margin s_unsafe − s_role in rank order with its ``confidence`` interval
    (± z · margin_se), coloured by its verdict at ``tau``: where the bars cross τ the flag is a
    coin toss, so the analyst sees which flags rest on evidence and which on noise."""
    from sarft_core.flags import verdicts, z_value

    if scores is None or len(scores) == 0:
        return _empty("no scores yet")
    if not has_confidence(scores):
        return _empty(NO_CONFIDENCE)
    df = scores.reset_index(drop=True).assign(margin=flag_margin(scores).to_numpy(), verdict=verdicts(scores, tau, confidence).to_numpy())
    df = df.sort_values("margin", kind="stable").reset_index(drop=True)
    reach = df["margin_se"].astype(float) * z_value(confidence)
    fig = go.Figure()
    for state, colour in FLAG_VERDICT_COLOURS.items():
        sel = (df["verdict"] == state).to_numpy()
        if not sel.any():
            continue
        sub = df[sel]
        bars = [None if not math.isfinite(v) else float(v) for v in reach[sel]]  # no error known: no bar, never a zero one
        custom = np.stack([sub["id"].astype(str).map(lambda s: html.escape(s, quote=False)).to_numpy(),
                           np.array(["n/a" if b is None else f"{b:.3f}" for b in bars], dtype=object)], axis=-1)
        fig.add_trace(go.Scatter(
            x=sub.index + 1, y=sub["margin"], mode="markers", name=f"{FLAG_VERDICT_NAMES[state]} ({int(sel.sum())})",
            marker=dict(color=colour, size=6), error_y=dict(type="data", array=bars, visible=True, thickness=1, width=0, color=colour),
            customdata=custom, hovertemplate="<b>%{customdata[0]}</b><br>margin %{y:.3f} ± %{customdata[1]}<extra></extra>",
        ))
    fig.add_hline(y=float(tau), line=dict(color="#d62728", dash="dash"), annotation_text=f"τ = {tau:g}", annotation_position="top left")
    fig.update_layout(
        title=f"s_unsafe − s_role per sample, ranked (error bars: {100 * confidence:g}% interval)",
        xaxis_title="samples, by margin", yaxis_title="s_unsafe − s_role", height=320,
        margin=dict(l=10, r=10, t=50, b=10), legend=dict(orientation="h", y=-0.25),
    )
    return fig
