"""Human review of judge verdicts: the least certain verdicts, and corrections used in the rates.

A correction is stored in the evaluation run directory, in ``corrections.json``::

    {"suites": {"<suite>": {"<item key>": {"label": "partial", "time": ..., "judges": {"hybrid": "refusal"}}}}}

The item key covers the item id, its prompt and the response (so a correction never carries
over to a regenerated, different answer). A corrected item counts with the human's label for
every judge's rates; ``metrics.json`` is recomputed at once (:func:`save_correction`), and each
later evaluation applies the corrections again (:func:`apply_corrections`, called by the runner).
Writes are atomic and serialised by a lock beside the file.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from sarft_core.errors import SarftError
from sarft_core.evaluation.metrics import COMPLIANCE, INVALID, PARTIAL, REFUSAL

CORRECTIONS_FILE = "corrections.json"
HUMAN_LABELS = (COMPLIANCE, REFUSAL, PARTIAL, INVALID)
HUMAN_COLUMN = "human_label"  # the corrected label, for display (not a verdict_ column: never rated as a judge)


def item_key(item_id, prompt, response) -> str:
    text = "\x00".join(str(x if x is not None else "") for x in (item_id, prompt, response))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def load_corrections(eval_dir: str | Path) -> dict[str, dict[str, dict]]:
    """{suite: {item key: correction}} of an evaluation run ({} when there are none)."""
    path = Path(eval_dir) / CORRECTIONS_FILE
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SarftError(f"{path} could not be read ({exc})", "fix or delete it (it holds only human corrections)") from None
    suites = obj.get("suites") if isinstance(obj, dict) else None
    if not isinstance(suites, dict):
        raise SarftError(f"{path} is not a corrections file", "fix or delete it (it holds only human corrections)")
    out: dict[str, dict[str, dict]] = {}
    for suite, items in suites.items():
        if isinstance(items, dict):
            out[str(suite)] = {str(k): v for k, v in items.items() if isinstance(v, dict) and v.get("label") in HUMAN_LABELS}
    return out


def apply_corrections(df, corrections: dict[str, dict]):
    """A copy of a suite table where corrected items carry the human label in every verdict
    column, plus ``human_label`` (the label or None) for display. Pure."""
    df = df.copy()
    if df.empty or "response" not in df.columns:
        return df
    ids = df["id"] if "id" in df.columns else [None] * len(df)
    keys = [item_key(i, p, r) for i, p, r in zip(ids, df["prompt"], df["response"])]
    human = [corrections.get(k, {}).get("label") for k in keys]
    df[HUMAN_COLUMN] = human
    for col in verdict_columns(df):
        df[col] = [h if h is not None else v for h, v in zip(human, df[col])]
    return df


def verdict_columns(df) -> list[str]:
    """The judges' verdict columns of a suite table (not the human one, not the _missing flags)."""
    return [c for c in df.columns if c.startswith("verdict_") and not c.endswith("_missing") ]


def save_correction(eval_dir: str | Path, suite: str, item_id, prompt, response, label: str) -> dict:
    """Store a human's label for one item, then recompute that suite's metrics. Returns the entry."""
    from sarft_core.store import atomic_write_json, locked

    label = str(label).strip().lower()
    if label not in HUMAN_LABELS:
        raise SarftError(f"{label!r} is not a verdict", f"use one of {', '.join(HUMAN_LABELS)}")
    eval_dir = Path(eval_dir)
    table = eval_dir / "artifacts" / f"{suite}.parquet"
    if not table.is_file():
        raise SarftError(f"no judged table for suite {suite!r} in {eval_dir}", "evaluate the suite first")
    key = item_key(item_id, prompt, response)
    with locked(eval_dir / f".{CORRECTIONS_FILE}.lock"):
        current = load_corrections(eval_dir)
        import pandas as pd

        df = pd.read_parquet(table)
        match = apply_corrections(df, {})
        ids = match["id"] if "id" in match.columns else [None] * len(match)
        rows = [i for i, k in enumerate(item_key(a, b, c) for a, b, c in zip(ids, match["prompt"], match["response"])) if k == key]
        if not rows:
            raise SarftError(f"no item of suite {suite!r} has that prompt and response", "pick the item from the run's own table")
        judges = {c[len("verdict_"):]: str(df[c].iloc[rows[0]]) for c in verdict_columns(df)}
        entry = {"label": label, "time": time.time(), "judges": judges}
        current.setdefault(suite, {})[key] = entry
        atomic_write_json(eval_dir / CORRECTIONS_FILE, {"suites": current})
        refresh_metrics(eval_dir, suite)
    return entry


def refresh_metrics(eval_dir: str | Path, suite_name: str) -> None:
    """Recompute one suite's records in metrics.json from its table and the corrections."""
    import pandas as pd

    from sarft_core.evaluation.suites import REFUSAL_RATE, SUITES, Suite, suite_metrics
    from sarft_core.store import atomic_write_json, read_json

    eval_dir = Path(eval_dir)
    path = eval_dir / "metrics.json"
    try:
        data = read_json(path, {}) or {}
    except ValueError as exc:
        raise SarftError(f"{path} is not valid JSON ({exc})", "rerun the evaluation") from None
    if not isinstance(data, dict) or not isinstance(data.get("suites", {}), dict):
        raise SarftError(f"{path} is not an evaluation result", "rerun the evaluation")
    suite = SUITES.get(suite_name) or Suite(suite_name, "prompts from a file: refusal rate", lambda ctx: [], [REFUSAL_RATE])
    df = apply_corrections(pd.read_parquet(eval_dir / "artifacts" / f"{suite_name}.parquet"), load_corrections(eval_dir).get(suite_name, {}))
    entry = data.setdefault("suites", {}).setdefault(suite_name, {})
    entry["records"] = suite_metrics(suite, df)
    entry["corrected"] = int(df[HUMAN_COLUMN].notna().sum()) if HUMAN_COLUMN in df.columns else 0
    entry["updated"] = time.time()
    atomic_write_json(path, data)


def least_certain(generations, n: int = 20):
    """The ``n`` verdicts their judge was least sure of (lowest ``confidence``), not yet corrected."""
    if generations is None or len(generations) == 0 or "confidence" not in generations.columns:
        return generations.iloc[0:0] if generations is not None else generations
    todo = generations[generations["confidence"].notna()]
    if HUMAN_COLUMN in todo.columns:
        todo = todo[todo[HUMAN_COLUMN].isna()]
    return todo.sort_values("confidence", kind="stable").head(int(n))


def review_table(eval_dirs, preferred: list[str] | None = None):
    """Every judged item of the given evaluation runs, one row each: eval_dir, suite, id, prompt,
    response, judge, verdict, confidence (None when the judge has none) and human_label."""
    import pandas as pd

    from sarft_core.evaluation.judges import judge_names

    order = list(preferred or judge_names())
    frames = []
    for eval_dir in eval_dirs:
        eval_dir = Path(eval_dir)
        corrections = load_corrections(eval_dir)
        for path in sorted((eval_dir / "artifacts").glob("*.parquet")):
            try:
                df = pd.read_parquet(path)
            except (OSError, ValueError) as exc:
                raise SarftError(f"{path} could not be read ({exc})", "rerun the evaluation of this run") from None
            cols = verdict_columns(df)
            if "response" not in df.columns or not cols:
                continue
            names = [c[len("verdict_"):] for c in cols]
            judge = next((n for n in order if n in names), names[0])
            shown = apply_corrections(df, corrections.get(path.stem, {}))
            conf_col = f"confidence_{judge}"
            frames.append(pd.DataFrame({
                "eval_dir": str(eval_dir), "suite": path.stem,
                "id": shown["id"] if "id" in shown.columns else None,
                "prompt": shown["prompt"], "response": shown["response"], "judge": judge,
                "verdict": df[f"verdict_{judge}"], "confidence": df[conf_col] if conf_col in df.columns else None,
                HUMAN_COLUMN: shown[HUMAN_COLUMN],
            }))
    cols = ["eval_dir", "suite", "id", "prompt", "response", "judge", "verdict", "confidence", HUMAN_COLUMN]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
