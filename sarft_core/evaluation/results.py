"""Reading evaluation results back: one tidy DataFrame for the dashboard and compare pages.

``load_metrics(paths)`` accepts an evaluation run directory, a training run directory (its
evaluations live under ``eval/``), a workspace runs folder, or a list of any of these, and
returns one row per number with the columns

    run, model, decoding, suite, group, metric, judge, value, ci_low, ci_high, n, n_unknown

``value`` / ``ci_low`` / ``ci_high`` are fractions for rates (refusal_rate, compliance_rate,
margin_positive), ROUGE-L F x100 for rouge_l, and mean log-prob differences (nats) for margin.
``load_generations(run, suite)`` returns a suite's per-item table (prompt, response, verdicts).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from sarft_core.errors import SarftError

COLUMNS = ["run", "model", "decoding", "suite", "group", "metric", "judge", "value", "ci_low", "ci_high", "n", "n_unknown"]


def find_eval_runs(path: str | Path) -> list[Path]:
    """Evaluation run directories at or under ``path`` (those holding a metrics.json)."""
    path = Path(path).expanduser()
    if (path / "metrics.json").is_file():
        return [path]
    return sorted(p.parent for p in path.glob("**/metrics.json") if p.parent.parent.name != "artifacts")


def read_metrics(path: str | Path, default: dict | None = None) -> dict:
    """An evaluation's metrics.json, checked: a JSON object whose ``suites`` map to objects with a
    list of records, each an object whose numbers are numbers (NaN allowed: an empty group), never
    infinite. Absent: ``default``. Anything else is one SarftError naming the file and the fix."""
    import math

    from sarft_core.store import read_json

    path = Path(path)
    problem = None
    try:
        data = read_json(path, None)
    except (ValueError, OSError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, a folder
        data, problem = None, f"is not valid JSON, truncated or damaged ({str(exc)[:120]})"
    if data is None and problem is None:
        return default if default is not None else {}
    if problem:
        pass
    elif not isinstance(data, dict):
        problem = "is not an evaluation result (not a JSON object)"
    elif not isinstance(data.get("suites", {}), dict):
        problem = "is not an evaluation result (no table of suites)"
    else:
        for name, suite in data.get("suites", {}).items():
            records = suite.get("records") if isinstance(suite, dict) else None
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                problem = f"suite {name!r} has no list of records"
                break
            bad = [r for r in records for k in ("value", "ci_low", "ci_high") if k in r and not _sound_number(r[k], math)]
            if bad:
                problem = f"suite {name!r} holds a value that is not a finite number ({bad[0].get('metric')})"
                break
    if problem:
        raise SarftError(f"{path} {problem}",
                         f"delete {path} and rerun the evaluation: its answers are cached under artifacts/, so only the numbers are recomputed")
    return data


def _sound_number(value, math) -> bool:
    if value is None:
        return True
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return not math.isinf(value)


def load_metrics(paths: str | Path | Iterable[str | Path]):
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows = []
    for given in paths:
        runs = find_eval_runs(given)
        if not runs and not Path(given).exists():
            raise SarftError(f"no such run directory: {given}", "give an evaluation or training run directory")
        for run in runs:
            data = read_metrics(run / "metrics.json")
            gen = data.get("generation") or {}
            for suite in (data.get("suites") or {}).values():
                for r in suite.get("records", []):
                    rows.append({"run": str(run), "model": data.get("model"), "decoding": gen.get("decoding", "greedy"), **r})
    df = pd.DataFrame(rows)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype="object")
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def load_generations(run: str | Path, suite: str):
    from sarft_core.store import read_table

    return read_table(Path(run) / "artifacts" / f"{suite}.parquet")
