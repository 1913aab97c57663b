"""HTML pages from Jinja2 templates (``sarft_core/templates``), autoescaped.

Every value a template prints is escaped unless it is :class:`markupsafe.Markup`, and the only
Markup made here is a plotly figure's own ``<div>`` (:class:`Figures`): text from datasets, models,
run names or files can never become markup. Shared by the audit report (:mod:`sarft_core.report`),
the reproduction grid's page (:func:`sarft_core.plots.reproduce_report_html`) and the token shading.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from markupsafe import Markup

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}


def fmt_num(value, digits: int = 3) -> str:
    """A number for a table cell: integers plain, others with ``digits`` decimals (small ones keep
    ``digits`` significant digits); anything else as its text, nothing for None / NaN."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return text(value)
    if not math.isfinite(v):
        return "–"
    if isinstance(value, (int, np.integer)) or (v.is_integer() and abs(v) >= 1):
        return f"{int(v)}"
    return f"{v:.{digits}f}" if v == 0 or abs(v) >= 0.01 else f"{v:.{digits}g}"


def text(value) -> str:
    """Any value as text for a cell (None and NaN: empty); the template escapes it."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def slug(value) -> str:
    from sarft_core.store import slug as file_slug

    return file_slug(value, keep="_-", default="x")


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("sarft_core", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(num=fmt_num, text=text, slug=slug)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def macro(template: str, name: str):
    """A macro of a template, callable from Python (returns escaped Markup)."""
    return getattr(environment().get_template(template).module, name)


@dataclass(frozen=True)
class Figure:
    name: str
    html: Markup  # plotly's own <div> and <script>: trusted markup


class Figures:
    """Turns plotly figures into :class:`Figure` (in the project's one look,
    :func:`sarft_core.figure_theme.themed`, whatever the process's default template is); the
    first one carries plotly.js itself."""

    def __init__(self, config: dict | None = None):
        self.count = 0
        self.config = PLOTLY_CONFIG if config is None else config

    def html(self, fig, name: str) -> Figure:
        import plotly.io as pio

        from sarft_core.figure_theme import themed

        div = pio.to_html(themed(fig), include_plotlyjs=self.count == 0, full_html=False, config=self.config,
                          div_id=f"fig-{self.count}-{slug(name)}")
        self.count += 1
        return Figure(str(name), Markup(div))  # the one place markup is trusted: plotly's output
