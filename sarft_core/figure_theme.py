"""The one look of every plotly figure the project shows or writes: :data:`TEMPLATE`, set by :func:`themed`.

Plotly gives a new figure ``plotly.io.templates.default``, a process-wide setting, and importing
Streamlit's chart element sets it to Streamlit's template, whose colours are placeholders
(``#000011`` ...) that only Streamlit's front end replaces and whose axes have no automargin. A
figure built in the dashboard's process and written to a file then drew every bar black, with
axis titles over the tick labels. So nothing relies on the default: the report's writer
(:class:`sarft_core.templating.Figures`) and the dashboard's chart helper (``app.widgets.chart``)
both draw :func:`themed` copies, and a figure on a page and in a file are the same figure.
"""
from __future__ import annotations

from functools import lru_cache

AXIS_TITLE_STANDOFF = 15  # px between an axis title and its tick labels


@lru_cache(maxsize=1)
def template():
    """Plotly's own ``plotly`` template (real colours) with axes that make room for their titles."""
    import plotly.io as pio

    base = pio.templates["plotly"]  # by name, never ``default``: the default is whatever was imported last
    theme = type(base)(base)  # a copy: the registry's template stays as plotly ships it
    for axis in (theme.layout.xaxis, theme.layout.yaxis):
        axis.automargin = True
        axis.title.standoff = AXIS_TITLE_STANDOFF
    return theme


def themed(fig):
    """A copy of ``fig`` with :func:`template` (the figure itself is left as it was)."""
    import plotly.graph_objects as go

    copy = go.Figure(fig)
    copy.layout.template = template()  # assigned, not updated: update would merge into the old template
    return copy
