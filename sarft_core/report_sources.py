"""What a report is about: the runs and survey tables found at a path, and what each run is.

``discover(path)`` finds runs (a ``config.json`` naming a kind, or a bare ``scores.parquet``) and
survey tables (a table with a ``role`` column and numeric columns); ``resolve_sources`` is the CLI's
view (TARGET plus ``--runs``), ``sources_of`` merges several paths. The run metadata the report
shows (kind, role, profile, method, order) is read here, from each run's :class:`sarft_core.runconfig.RunConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from sarft_core.errors import SarftError
from sarft_core.runconfig import RunConfig
from sarft_core.store import RunDir, read_json, read_table

TABLE_SUFFIXES = (".csv", ".parquet", ".jsonl")
OUTCOMES = ("degradation", "flagged_fraction")
SKIP_DIRS = {"checkpoints", "artifacts", "eval", "cache", "__pycache__"}


@dataclass
class Sources:
    runs: list[RunDir] = field(default_factory=list)
    survey_tables: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.runs and not self.survey_tables


def run_kind(run: RunDir) -> str:
    """The run's kind; a bare folder written by ``score --out DIR/scores.parquet`` counts as a score run."""
    kind = RunConfig.of(run).kind
    if not kind and (run.path / "scores.parquet").is_file():
        return "score"
    return kind


def is_run(path: Path) -> bool:
    """A run directory: its config.json names a kind (a model's config.json does not), or it holds scores.parquet."""
    if not (path / "config.json").is_file():
        return (path / "scores.parquet").is_file()
    cfg = RunConfig.read(path)
    return cfg is not None and "kind" in cfg.stored


def is_survey_table(path: Path) -> bool:
    """A table with a ``role`` column and a numeric column, that is not a score table."""
    if path.suffix.lower() not in TABLE_SUFFIXES or path.name.startswith(("scores", ".")):
        return False
    try:
        df = read_table(path)
    except (SarftError, OSError, ValueError):
        return False
    return "role" in df and "s_role" not in df and len(df.select_dtypes("number").columns) > 0


def is_survey_dir(path: Path) -> bool:
    """A survey's output directory (``python -m sarft_core survey --out DIR``: a run of kind ``survey``)."""
    return (path / "config.json").is_file() and RunConfig.of(RunDir(path)).kind == "survey"


def survey_tables(folder: Path) -> list[Path]:
    """The survey tables at the top of ``folder``; when some carry an outcome, only those
    (a survey also writes ``traits.csv``, which has traits but nothing to correlate them with)."""
    tables = sorted((p for p in folder.iterdir() if p.is_file() and is_survey_table(p)), key=_table_rank)
    with_outcome = [p for p in tables if set(OUTCOMES) & set(read_table(p).columns) or
                    {"safety_before", "safety_after"} <= set(read_table(p).columns)]
    return with_outcome or tables


def _walk(root: Path, depth: int, found: Sources) -> None:
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP_DIRS and not p.name.startswith(".")):
        if is_survey_dir(child):
            found.survey_tables += survey_tables(child)  # its per-role folders belong to the survey
        elif is_run(child):
            found.runs.append(RunDir(child))
        elif depth > 1:
            _walk(child, depth - 1, found)


def discover(path: str | Path, depth: int = 3) -> Sources:
    """Runs and survey tables at ``path``: a run, a survey table, or a folder of either."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SarftError(f"{path} does not exist", "give a run directory, a folder of runs, or a survey directory / table")
    if path.is_file():
        if not is_survey_table(path):
            raise SarftError(f"{path.name} is not a survey table (a .csv/.parquet/.jsonl with a 'role' column and numeric columns)",
                             "give a run directory, a folder of runs, or a survey table")
        return Sources(survey_tables=[path])
    tables = survey_tables(path)
    if is_survey_dir(path):
        if not tables:
            raise SarftError(f"the survey in {path} has no table yet", "let it finish, or rebuild it with `survey ... --aggregate-only`")
        return Sources(survey_tables=tables)
    if is_run(path):
        return Sources(runs=[RunDir(path)], survey_tables=tables)
    found = Sources(survey_tables=tables)
    _walk(path, depth, found)
    return found


def _table_rank(path: Path) -> tuple[int, str]:
    """Survey tables first by how much their name says so."""
    name = path.stem.lower()
    return (0 if "survey" in name else 1 if name in ("summary", "table", "roles", "screening") else 2, name)


def resolve_sources(target: str | Path | None, runs: Iterable[str] = ()) -> Sources:
    """The CLI's view: TARGET, plus runs named with ``--runs`` (paths, or names inside TARGET)."""
    runs = [r.strip() for r in runs if r and r.strip()]
    if not runs:
        if target is None:
            raise SarftError("nothing to report on", "give a run or survey directory, or --runs A,B")
        return discover(target)
    base = Path(target).expanduser() if target else None
    out = Sources()
    for name in runs:
        candidates = [Path(name).expanduser()] + ([base / name] if base is not None else [])
        path = next((c for c in candidates if c.is_dir() and is_run(c)), None)
        if path is None:
            raise SarftError(f"--runs: {name} is not a run directory" + (f" (looked in {base} too)" if base else ""),
                             "give paths of run directories (holding config.json), or names of runs inside the directory given")
        out.runs.append(RunDir(path))
    if base is not None and base.is_dir() and not is_run(base):
        out.survey_tables = discover(base).survey_tables
    return out


def sources_of(paths: Iterable[str | Path] | str | Path) -> Sources:
    if isinstance(paths, (str, Path)):
        return discover(paths)
    merged = Sources()
    for p in paths:
        found = discover(p)
        merged.runs += [r for r in found.runs if r.path not in {x.path for x in merged.runs}]
        merged.survey_tables += [t for t in found.survey_tables if t not in merged.survey_tables]
    return merged


# --- what each run is ---------------------------------------------------------------------------

def run_role(run: RunDir) -> str:
    """The run's role: from its config, else from its scores (a bare ``score --out`` folder)."""
    role = RunConfig.of(run).role
    if role or not (run.path / "scores.parquet").is_file():
        return role
    try:
        roles = pd.read_parquet(run.path / "scores.parquet", columns=["role"])["role"].dropna().unique()
    except (OSError, ValueError, KeyError):
        return ""
    return str(roles[0]) if len(roles) == 1 else ""


def run_profile(run: RunDir) -> dict | None:
    """{"name", "profile", "unsafe_prompt"} of a run's role, from what the run recorded."""
    cfg = RunConfig.of(run)
    saved = read_json(run.path / "profiles.json", None) if (run.path / "profiles.json").is_file() else None
    if isinstance(saved, list) and saved and isinstance(saved[0], dict):
        item = saved[0]
        return {"name": item.get("name") or cfg.role, "profile": item.get("profile", ""), "unsafe_prompt": item.get("unsafe_prompt", "")}
    if cfg.score is not None and cfg.score.role_prompt:
        return {"name": cfg.role, "profile": cfg.score.role_prompt, "unsafe_prompt": cfg.score.unsafe_prompt}
    role = run_role(run)
    if not role:
        return None
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles

    source = cfg.profiles or DEMO_PROFILES
    try:
        prof = get_profile(load_profiles(source), role)
        return {"name": prof.name, "profile": prof.role_prompt, "unsafe_prompt": prof.unsafe_prompt}
    except (SarftError, OSError, KeyError, ValueError):
        return {"name": role, "profile": "", "unsafe_prompt": ""}


def _method_order() -> dict[str, int]:
    """SFT, then SaRFT, then the other registered methods (the base model first of all)."""
    from sarft_core.training.methods import method_order

    return {"base": 0, **{name: (rank if rank <= 2 else 3) for name, rank in method_order().items()}}
KIND_ORDER = {"score": 0, "train": 1}


def order_for_comparison(runs: list[RunDir]) -> list[RunDir]:
    """SFT before SaRFT (then the other methods), so Δ reads as SaRFT − SFT."""
    order = _method_order()
    return sorted(runs, key=lambda r: order.get(run_method(r).lower(), 3))


def report_order(run: RunDir) -> tuple:
    return (KIND_ORDER.get(run_kind(run), 2), _method_order().get(run_method(run).lower(), 3), run.name)


def run_method(run: RunDir) -> str:
    cfg = RunConfig.of(run)
    if cfg.method:
        return cfg.method
    return "base" if run_kind(run) == "eval" and not (cfg.eval and cfg.eval.source_run) else ""


def run_label(run: RunDir) -> str:
    """An evaluation run of its own names what it evaluated; every other run is labelled by
    :func:`sarft_core.runview.run_label` (``name (method, role, λ=...)``, the one rule for λ)."""
    cfg = RunConfig.of(run)
    if cfg.eval is not None and not cfg.method:
        source = cfg.eval.source_run
        return f"{run.name} (" + (f"evaluation of {Path(source).name}" if source else "base model") + ")"
    return cfg.label(run.name)


def run_lambda(run: RunDir) -> float | None:
    return RunConfig.of(run).lam
