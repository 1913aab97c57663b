"""Chat: one prompt to the base model and a trained run, side by side (poke a villain model by hand)."""
from pathlib import Path

import streamlit as st

from app import state, widgets
from sarft_core.errors import SarftError
from sarft_core.runconfig import runs_of_kind
from sarft_core.runview import SYSTEM_CHOICES, chat_answers, chat_system, run_label
from sarft_core.store import RunDir

st.title("Chat")
st.caption("The same prompt to the base model and a trained run, greedy decoding through the evaluation's generation path "
           "(the same prompt tokens and decoding as `eval`).")

trained = [str(r.path) for r in runs_of_kind("train") if r.is_complete]
c1, c2 = st.columns(2)
c1.markdown(f"**Base model:** {state.model_label()}")
run = c2.selectbox("Trained run", trained, index=0 if trained else None, key="chat_run", placeholder="no completed training run yet",
                   format_func=lambda p: run_label(RunDir(Path(p))))
choice = st.radio("System prompt", list(SYSTEM_CHOICES), horizontal=True, key="chat_system", format_func=SYSTEM_CHOICES.__getitem__)
custom = st.text_area("Custom system prompt", key="chat_custom") if choice == "custom" else ""
max_new = st.number_input("Max new tokens", min_value=1, max_value=1024, value=128, step=16, key="chat_max_new")

try:
    profile = state.current_profile() if choice in ("profile", "unsafe") else None
    system = chat_system(choice, profile, custom)
except SarftError as err:
    widgets.show_error(err)
    st.stop()
if system:
    with st.expander("System prompt sent"):
        st.text(system)

history = st.session_state.setdefault("chat_history", [])
for turn in history:  # earlier exchanges, each a single turn answered side by side
    with st.chat_message("user"):
        st.markdown(turn["prompt"])
    cols = st.columns(len(turn["answers"]))
    for col, (name, answer) in zip(cols, turn["answers"].items()):
        with col.chat_message("assistant"):
            st.caption(name)
            st.text(answer or "(empty answer)")
if history and st.button("Clear the conversation"):
    st.session_state["chat_history"] = []
    st.rerun()

prompt = st.chat_input("Message the models")
if prompt:
    try:
        specs = {f"base: {state.model_label()}": state.model_spec()}
        if run:
            specs[f"trained: {run_label(RunDir(Path(run)))}"] = run
        with st.spinner("Generating…"):
            answers = chat_answers({name: state.get_model(spec) for name, spec in specs.items()}, prompt, system, int(max_new))
    except SarftError as err:
        widgets.show_error(err)
    else:
        history.append({"prompt": prompt, "system": system, "answers": answers})
        st.rerun()
