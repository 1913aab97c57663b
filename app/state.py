"""Shared dashboard state: the model (loaded once per process), the data source and the role.

Long-lived things (runs, jobs, reviews) live on disk in the run store; the browser session holds
only the current choices (data source, role, prompt edits, selected run).
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES, RoleProfile, load_profiles, load_samples
from sarft_core.errors import SarftError
from sarft_core.paths import confine



def in_process_max() -> int:
    """Scoring runs up to this many samples run in the app process; larger ones in a background job."""
    try:
        return int(os.environ.get("SARFT_APP_IN_PROCESS_MAX", "64"))
    except ValueError:
        return 64


def model_spec() -> str:
    """The model the dashboard uses: the sidebar's choice, else $SARFT_MODEL, else the default (empty: embedded-aligned)."""
    return st.session_state.get("model_spec", os.environ.get("SARFT_MODEL", "")).strip()


def model_label(spec: str | None = None) -> str:
    from sarft_core.models import DEFAULT_MODEL

    spec = model_spec() if spec is None else spec
    return spec or f"{DEFAULT_MODEL} (default: the safety-aligned embedded SmolLM2)"


@st.cache_data(show_spinner=False)
def default_fingerprint() -> str | None:
    """Today's fingerprint of the default model's weights (None where it cannot be worked out)."""
    from sarft_core.errors import SarftError
    from sarft_core.models import model_fingerprint

    try:
        return model_fingerprint("embedded-aligned")
    except SarftError:
        return None


@st.cache_resource(show_spinner="Loading the model (once per process)…", max_entries=2)
def get_model(spec: str):
    from sarft_core.models import load_model

    return load_model(spec or None, dtype="float32", device="auto")


@st.cache_data(show_spinner=False, max_entries=16)
def _profiles(path: str, mtime: float) -> dict[str, RoleProfile]:
    return load_profiles(path)


@st.cache_data(show_spinner=False, max_entries=32)
def _samples(path: str, mtime: float, role: str):
    return load_samples(path, role=role)


@st.cache_data(show_spinner="Reading the grid…", max_entries=8)
def _grid_view(path: str, signature: tuple) -> dict:
    from sarft_core.gridview import grid_view as compute

    return compute(Path(path))


def grid_view(path: str | Path) -> dict:
    """:func:`sarft_core.gridview.grid_view` computed once per state of the grid's files (its
    bootstrap takes seconds, and the Compare page reruns on every click)."""
    from sarft_core.gridview import grid_signature

    return _grid_view(str(path), grid_signature(Path(path)))


def data_source() -> str:
    return st.session_state.get("data_source", "demo")


class AwaitingInput(SarftError):
    """Input the analyst has not typed yet: shown as a hint (or not at all), never as an error."""


def data_paths() -> tuple[Path, Path]:
    """(samples file, profiles file) of the chosen source, confined to the allowed folders. A path
    typed is checked at once; one not typed yet is :class:`AwaitingInput`, not a "no path given" error."""
    if data_source() == "demo":
        return DEMO_SAMPLES, DEMO_PROFILES
    typed = {what: str(st.session_state.get(f"{what}_path", "") or "").strip() for what in ("samples", "profiles")}
    paths = {what: confine(text) for what, text in typed.items() if text}
    for what, p in paths.items():
        if p.is_dir():
            raise SarftError(f"the {what} path {p} is a folder", "give a file")
    missing = [what for what, text in typed.items() if not text]
    if missing:
        raise AwaitingInput(f"Type the {' and '.join(missing)} file's path in the sidebar to use your own data"
                            if len(missing) == 1 else "Type the samples and profiles files' paths in the sidebar to use your own data")
    return paths["samples"], paths["profiles"]


def profiles() -> dict[str, RoleProfile]:
    _, path = data_paths()
    return _profiles(str(path), path.stat().st_mtime)


def role_name() -> str | None:
    return st.session_state.get("role")


def current_profile() -> RoleProfile:
    """The chosen role's profile with the analyst's prompt edits applied."""
    all_profiles = profiles()  # first: with no data to choose from, the missing data is the thing to say
    name = role_name()
    if not name:
        raise SarftError("no role chosen", "pick a role in the sidebar")
    if name not in all_profiles:
        raise SarftError(f"unknown role {name!r} for this data source", "pick a role in the sidebar")
    base = all_profiles[name]
    edit = st.session_state.get("prompt_edits", {}).get(name)
    if edit:
        return RoleProfile(base.name, edit["role_prompt"], edit["unsafe_prompt"], base.description)
    return base


def is_edited(name: str) -> bool:
    return name in st.session_state.get("prompt_edits", {})


def set_edit(name: str, role_prompt: str, unsafe_prompt: str) -> None:
    if not role_prompt.strip() or not unsafe_prompt.strip():
        raise SarftError("a prompt is empty", "write both the role prompt and the unsafe prompt, or reset them")
    edits = dict(st.session_state.get("prompt_edits", {}))
    edits[name] = {"role_prompt": role_prompt, "unsafe_prompt": unsafe_prompt}
    st.session_state["prompt_edits"] = edits


def reset_edit(name: str) -> None:
    edits = dict(st.session_state.get("prompt_edits", {}))
    edits.pop(name, None)
    st.session_state["prompt_edits"] = edits


def role_samples():
    samples_path, _ = data_paths()
    name = role_name()
    if not name:
        raise SarftError("no role chosen", "pick a role in the sidebar")
    return _samples(str(samples_path), samples_path.stat().st_mtime, name)


def data_args() -> list[str]:
    """``--data/--profiles`` arguments for CLI commands (none for the demo data)."""
    if data_source() == "demo":
        return []
    samples, profiles_path = data_paths()
    return ["--data", str(samples), "--profiles", str(profiles_path)]


def model_args() -> list[str]:
    spec = model_spec()
    return ["--model", spec] if spec else []
