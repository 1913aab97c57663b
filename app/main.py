"""SaRFT Studio dashboard: `python -m sarft_core app` (or `streamlit run app/main.py`)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # streamlit puts app/ on the path, the pages import app.* and sarft_core
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import widgets  # noqa: E402

PAGES = ROOT / "pages"  # beside app/, not inside it: a pages/ folder next to the main script would switch on
# Streamlit's older directory-based navigation

st.set_page_config(page_title="SaRFT Studio", page_icon=":material/shield:", layout="wide")
pages = [
    st.Page(PAGES / "overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page(PAGES / "role.py", title="Role", icon=":material/theater_comedy:"),
    st.Page(PAGES / "scoring.py", title="Scoring (RDS)", icon=":material/target:"),
    st.Page(PAGES / "training.py", title="Training", icon=":material/model_training:"),
    st.Page(PAGES / "evaluation.py", title="Evaluation", icon=":material/science:"),
    st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare:"),
    st.Page(PAGES / "chat.py", title="Chat", icon=":material/chat:"),
    st.Page(PAGES / "survey.py", title="Survey", icon=":material/scatter_plot:"),
]
page = st.navigation(pages)
widgets.sidebar()
page.run()
