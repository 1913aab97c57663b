"""An RDS audit on disk: a score run, its per-token ratios, and the analyst's review of the flags.

A score run is a run directory (kind ``score``) holding:
- ``profiles.json``: the role's profile exactly as scored (the analyst may have edited the
  role or unsafe prompt), so the run can be reproduced with ``--profiles``;
- ``scores.parquet``: one contract score row per sample; ``scores.tokens.jsonl``: per answer,
  its tokens and their log p_unsafe − log p_role;
- after review, ``scores.review.json`` (``{"tau": float, "overrides": {id: bool}}``: what the
  analyst decided) and ``scores.flags.json`` (``{sample_id: bool}`` for every sample: the
  final D_h membership the trainer reads).
The tokens and the review record the content fingerprint of the table they were made for
(:data:`SCORES_STAMP`); the flags file is the review's. Sample ids repeat across roles and runs,
so a side file left beside another table (a role scored into the same file) would silently shade
or flag other samples: it is ignored instead, and named (:func:`stale_side_files`).
Small runs are scored in-process (:func:`score_in_process`); larger ones run in the background
as ``python -m sarft_core score ... --out RUN/scores.parquet --with-tokens`` (:func:`score_args`).
Both write the same files.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from sarft_core.errors import SarftError
from sarft_core.flags import flag_margin, is_flagged
from sarft_core.runconfig import RunConfig, ScoreSettings, record_model, runs_of_kind
from sarft_core.store import (RunDir, atomic_write_json, atomic_write_text, create_run, read_json_object, read_jsonl,
                              read_table, write_table)

SCORES_FILE = "scores.parquet"
TOKENS_FILE = "scores.tokens.jsonl"
PROFILE_FILE = "profiles.json"
SCORES_STAMP = "scores_sha256"  # in each side file: the fingerprint of the table it was made for


def create_score_run(profile, data_path: str | Path | None, model_spec: str = "", limit: int | None = None,
                     profiles_source: str | Path | None = None) -> RunDir:
    """A new score run directory recording what will be scored (profile as edited)."""
    settings = ScoreSettings(data=str(data_path) if data_path else "demo", profiles_source=str(profiles_source) if profiles_source else "demo",
                             limit=limit, role_prompt=profile.role_prompt, unsafe_prompt=profile.unsafe_prompt)
    run = create_run("score", RunConfig.for_scoring(profile.name, model_spec or "", settings).to_dict(), name=f"score-{profile.name}")
    atomic_write_json(run.path / PROFILE_FILE, [{"name": profile.name, "profile": profile.role_prompt,
                                                 "unsafe_prompt": profile.unsafe_prompt, "description": profile.description}])
    return run


def score_args(run: RunDir, validate: bool = False) -> list[str]:
    """``python -m sarft_core`` arguments that score ``run`` (what the background job runs);
    ``validate`` adds ``--validate`` (the influence column and the validation side file)."""
    cfg = RunConfig.of(run)
    settings = cfg.score or ScoreSettings()
    args = ["score", "--role", cfg.role, "--profiles", str(run.path / PROFILE_FILE)]
    if settings.data != "demo":
        args += ["--data", settings.data]
    if settings.limit:
        args += ["--limit", str(settings.limit)]
    if cfg.model:
        args += ["--model", cfg.model]
    return args + ["--out", str(run.path / SCORES_FILE), "--with-tokens"] + (["--validate"] if validate else [])


def score_in_process(lm, samples, profile, run: RunDir, progress: Callable[[float, float | None], None] | None = None):
    """Score ``samples`` with the loaded model and write the run's files; returns the ScoreResult."""
    from sarft_core.scoring import score_role

    run.set_status("running", pid=None, started=time.time())
    record_model(run.path, lm.spec, lm.fingerprint, "score")  # the model that ran, as resolved
    try:
        result = score_role(lm, samples, profile, progress=progress)
        write_table(result.frame(), run.path / SCORES_FILE)
        write_token_ratios(run.path / SCORES_FILE, result, lm.tokenizer)
    except BaseException as exc:
        run.set_status("failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    stats = {k: v for k, v in result.stats.items() if k != "cache_dir"}
    run.set_status("completed", stats=stats)
    return result


def load_scores(run: RunDir) -> pd.DataFrame:
    path = run.path / SCORES_FILE
    if not path.is_file():
        raise SarftError(f"run {run.name} has no scores yet", "wait for its scoring job to finish, or score again")
    df = read_table(path)
    missing = {"id", "s_role", "s_unsafe", "input", "output"} - set(df.columns)
    if missing:
        raise SarftError(f"{path} lacks columns {sorted(missing)}", "score the role again")
    df["id"] = df["id"].astype(str)
    return df


def load_token_ratios(run: RunDir) -> dict[str, dict]:
    """Sample id -> {"tokens": [...], "ratio": [...]} (empty when scored without tokens, or when the
    tokens file was made for another score table)."""
    return _read_tokens(run.path / SCORES_FILE)[1]


# --- side files: each belongs to one score table ----------------------------------------------

def table_fingerprint(scores_path: str | Path) -> str | None:
    """The content fingerprint of a score table (None when there is none): the bytes themselves,
    so a copy keeps its side files and any rewrite with other numbers loses them."""
    try:
        st = os.stat(scores_path)
    except OSError:
        return None
    # a table is hashed once per version of the file (a rewrite is a new inode and time)
    return _file_sha256(str(Path(scores_path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, *version) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def tokens_path(scores_path: str | Path) -> Path:
    p = Path(scores_path)
    return p.with_name(p.stem + ".tokens.jsonl")


def write_token_ratios(scores_path: str | Path, result, tokenizer) -> Path:
    """Each answer's tokens and log p_unsafe − log p_role beside the score table (written first),
    stamped with that table's fingerprint."""
    stamp = table_fingerprint(scores_path)
    lines = [json.dumps({"id": sid, "tokens": [tokenizer.decode([t]) for t in ids], "ratio": result.token_ratios(sid),
                         SCORES_STAMP: stamp}, ensure_ascii=False)
             for sid, ids in result.answer_ids.items()]
    path = tokens_path(scores_path)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _read_tokens(scores_path: Path) -> tuple[str, dict[str, dict]]:
    """("none" | "current" | "stale", the ratios of the current table)."""
    rows = [r for r in read_jsonl(tokens_path(scores_path)) if "id" in r]
    if not rows:
        return "none", {}
    stamp = table_fingerprint(scores_path)
    mine = {str(r["id"]): r for r in rows if stamp is not None and r.get(SCORES_STAMP) == stamp}
    return ("current", mine) if mine else ("stale", {})


def validation_path(scores_path: str | Path) -> Path:
    """Where ``score --validate`` writes how far the table's flags agree with measured erosion."""
    p = Path(scores_path)
    return p.with_name(p.stem + ".validation.json")


def write_validation(scores_path: str | Path, summary: dict) -> Path:
    """The validation summary beside the score table (written first), stamped with its fingerprint."""
    path = validation_path(scores_path)
    atomic_write_json(path, {**summary, SCORES_STAMP: table_fingerprint(scores_path)})
    return path


def _read_validation(scores_path: str | Path) -> tuple[str, dict]:
    """("none" | "current" | "stale", the validation of the current table)."""
    return _read_side_json(validation_path(scores_path), scores_path)


def load_validation(scores_path: str | Path) -> dict:
    """The validation summary of this very table ({} when none was made for it)."""
    return _read_validation(scores_path)[1]


def _read_review(scores_path: str | Path) -> tuple[str, dict]:
    """("none" | "current" | "stale", the saved review of the current table)."""
    return _read_side_json(review_path(scores_path), scores_path)


def _read_side_json(path: Path, scores_path: str | Path) -> tuple[str, dict]:
    """("none" | "current" | "stale", the side file's object when it was made for this very table);
    a damaged file is no side file of this table either."""
    if not path.is_file():
        return "none", {}
    data = read_json_object(path, None)
    stamp = table_fingerprint(scores_path)
    if data is None or stamp is None or data.get(SCORES_STAMP) != stamp:
        return "stale", {}
    return "current", data


def review_state(scores_path: str | Path) -> str:
    """"current" (a review saved for this very table), "stale" (one made for another) or "none"."""
    return _read_review(scores_path)[0]


def stale_side_files(scores_path: str | Path) -> list[Path]:
    """The side files beside ``scores_path`` that were made for another table (or before side files
    recorded their table), which every reader ignores."""
    stale = [tokens_path(scores_path)] if _read_tokens(Path(scores_path))[0] == "stale" else []
    review = review_state(scores_path)
    if review == "stale":
        stale.append(review_path(scores_path))
    if review != "current" and flags_path(scores_path).is_file():
        stale.append(flags_path(scores_path))  # the flags are the review's
    if _read_validation(scores_path)[0] == "stale":
        stale.append(validation_path(scores_path))
    return stale


_SIDE_FIX = {".tokens.jsonl": "score again with --with-tokens for token shading",
             ".validation.json": "score again with --validate",
             ".review.json": "review the flags and save again", ".flags.json": "review the flags and save again"}


def stale_note(path: Path) -> str:
    """The one sentence every face shows for an ignored side file."""
    fix = next((f for suffix, f in _SIDE_FIX.items() if path.name.endswith(suffix)), "delete it")
    return f"{path.name} was made for another score table, so it is ignored ({fix})"


def score_runs(runs: list[RunDir], role: str | None = None) -> list[RunDir]:
    """Score runs (newest first), optionally of one role, that have finished scoring."""
    return [run for run in runs_of_kind("score", runs, role or None) if (run.path / SCORES_FILE).is_file()]


# --- the analyst's review -------------------------------------------------------------------

def review_path(scores_path: str | Path) -> Path:
    p = Path(scores_path)
    return p.with_name(p.stem + ".review.json")


def flags_path(scores_path: str | Path) -> Path:
    p = Path(scores_path)
    return p.with_name(p.stem + ".flags.json")


def load_review(scores_path: str | Path) -> tuple[float, dict[str, bool]]:
    """(τ, overrides) saved for this very table; (0, {}) when none was, or the saved one is another table's."""
    data = _read_review(scores_path)[1]
    overrides = data.get("overrides")
    overrides = {str(k): bool(v) for k, v in overrides.items()} if isinstance(overrides, dict) else {}
    tau = data.get("tau", 0.0)
    return (float(tau) if isinstance(tau, (int, float)) and not isinstance(tau, bool) else 0.0), overrides


def effective_flags(scores: pd.DataFrame, tau: float = 0.0, overrides: dict | None = None) -> pd.Series:
    """Flag of each sample: s_unsafe - s_role > tau, then the analyst's per-sample overrides, by the
    rule training selects D_h with (:func:`sarft_core.training.selection.apply_overrides`: an id not
    in these scores is a stale overrides file, an error), so the page and the training agree."""
    from sarft_core.training.selection import apply_overrides

    flags = is_flagged(scores, tau)
    if overrides:
        ids = scores["id"].astype(str)
        decided = apply_overrides(dict(zip(ids, flags.astype(bool))), {str(k): v for k, v in overrides.items()})
        for sid in map(str, overrides):
            flags[ids == sid] = decided[sid]
    return flags.astype(bool)


def save_review(scores: pd.DataFrame, scores_path: str | Path, tau: float, overrides: dict) -> dict[str, bool]:
    """Write the review and the final {sample_id: flagged} map beside the scores; return the map."""
    known = set(scores["id"].astype(str))
    unknown = sorted(set(map(str, overrides)) - known)
    if unknown:
        raise SarftError(f"overrides name unknown sample ids: {', '.join(unknown[:5])}", "override only samples of these scores")
    overrides = {str(k): bool(v) for k, v in overrides.items()}
    flags = effective_flags(scores, tau, overrides)
    final = {sid: bool(f) for sid, f in zip(scores["id"].astype(str), flags)}
    atomic_write_json(review_path(scores_path), {"tau": float(tau), "overrides": overrides, "saved": time.time(),
                                                 "flagged": int(sum(final.values())), "samples": len(final),
                                                 SCORES_STAMP: table_fingerprint(scores_path)})
    atomic_write_json(flags_path(scores_path), final)
    return final


def current_reviews(runs: list[RunDir], role: str | None = None) -> list[tuple[RunDir, dict]]:
    """The score runs (of ``role``) whose saved review belongs to their present table, each with that
    review (tau, flagged, samples, saved), the latest saved first: what training may take its D_h from.
    A leftover review of an older table is none: it would hand training another table's flags."""
    found = []
    for run in score_runs(runs, role):
        state, review = _read_review(run.path / SCORES_FILE)
        if state == "current":
            found.append((run, review))
    saved = lambda item: item[1].get("saved") if isinstance(item[1].get("saved"), (int, float)) else 0.0  # noqa: E731
    return sorted(found, key=saved, reverse=True)


def review_summary(review: dict) -> str:
    """``τ 0.10 · 3 of 12 flagged · saved 2025-05-01 14:02``, with the parts the review recorded."""
    def number(key):
        value = review.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    tau, flagged, samples, saved = number("tau"), number("flagged"), number("samples"), number("saved")
    bits = [f"τ {tau:.2f}" if tau is not None else "",
            f"{flagged} of {samples} flagged" if flagged is not None and samples is not None else "",
            f"saved {time.strftime('%Y-%m-%d %H:%M', time.localtime(saved))}" if saved is not None else ""]
    return " · ".join(b for b in bits if b)


# how sure each flag is travels with it (a table scored before these were recorded has none of them)
CONFIDENCE_COLUMNS = ("margin_se", "verdict", "influence")


def d_h(scores: pd.DataFrame, flags, tau: float = 0.0) -> pd.DataFrame:
    """The flagged samples (D_h) with their scores, margin and, where the table has them, the
    margin's standard error, its verdict at ``tau`` and its measured influence."""
    from sarft_core.flags import verdicts

    df = scores.reset_index(drop=True).copy()
    df["margin"] = flag_margin(df)
    if "margin_se" in df:
        df["verdict"] = verdicts(df, tau)
    cols = [c for c in ("id", "role", "input", "output", "s_role", "s_unsafe", "margin", *CONFIDENCE_COLUMNS) if c in df]
    return df.loc[pd.Series(list(flags), dtype=bool).to_numpy(), cols]


def export_d_h(scores: pd.DataFrame, flags, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise SarftError(f"unsupported export type {path.suffix or '(none)'}", "export D_h as .jsonl or .csv")
    write_table(d_h(scores, flags), path)
    return path


def d_h_bytes(scores: pd.DataFrame, flags, fmt: str, tau: float = 0.0) -> bytes:
    """D_h as JSONL or CSV bytes (for a download button)."""
    df = d_h(scores, flags, tau)
    if fmt == "jsonl":
        return df.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8")
    if fmt == "csv":
        return df.to_csv(index=False).encode("utf-8")
    raise SarftError(f"unsupported export format {fmt!r}", "use jsonl or csv")


# --- the Scoring page's views -------------------------------------------------------------------

def tau_bounds(margins, saved_tau: float = 0.0) -> tuple[float, float, float]:
    """(lo, hi, step) of a τ slider fitted to the data: the finite margins' range with a tenth of it
    (at least two steps) on each side, always holding 0 (the published rule) and the saved τ, on a
    grid of a power of ten near a two-hundredth of the range (at most 0.01, so a model whose margins
    all lie within ±0.003 still gets a slider that can tell them apart). A fixed ±0.5 in steps of
    0.01 left every margin of a real run inside a sliver of it."""
    import math

    values = [float(m) for m in margins if m is not None and math.isfinite(float(m))]
    lo = min([0.0, float(saved_tau), *values])
    hi = max([0.0, float(saved_tau), *values])
    step = min(0.01, 10.0 ** math.floor(math.log10(max(hi - lo, 1e-6) / 200)))
    pad = max(0.1 * (hi - lo), 2 * step)
    digits = max(0, -math.floor(math.log10(step)))  # the grid's values, free of float noise (0.30000000000000004)
    return round(math.floor((lo - pad) / step) * step, digits), round(math.ceil((hi + pad) / step) * step, digits), step


def tau_format(step: float) -> str:
    """The slider's number format: as many decimals as the step has, at least two."""
    import math

    return f"%.{max(2, -math.floor(math.log10(step)))}f"


def samples_table(scores: pd.DataFrame, flags, overrides: dict, tau: float = 0.0, confidence: float = 0.95) -> pd.DataFrame:
    """One row per sample, highest margin first: its flag (after overrides), override, verdict at
    ``tau``, margin ± standard error, scores, and the measured erosion of refusal (−influence,
    where the table was validated), question and answer."""
    from sarft_core.flags import verdicts

    df = scores.reset_index(drop=True)
    margin = flag_margin(df)
    se = df["margin_se"].astype(float) if "margin_se" in df else pd.Series(float("nan"), index=df.index)
    table = pd.DataFrame({
        "id": df["id"].astype(str),
        "verdict": verdicts(df, tau, confidence),
        "flagged": pd.Series(list(flags), dtype=bool).to_numpy(),
        "override": df["id"].astype(str).map(lambda i: {True: "flagged", False: "kept"}.get(overrides.get(i), "")),
        "margin ± se": [f"{m:+.3f} ± {s:.3f}" if s == s else f"{m:+.3f} ± ?" for m, s in zip(margin, se)],
        "margin": margin, "margin_se": se, "s_role": df["s_role"], "s_unsafe": df["s_unsafe"],
    })
    if "influence" in df:
        table["measured erosion"] = -df["influence"].astype(float)  # positive: training on it lowers refusal
    table["input"], table["output"] = df["input"], df["output"]
    return table.sort_values(["margin", "id"], ascending=[False, True], kind="stable").reset_index(drop=True)


SHOW_CHOICES = ("all", "flagged", "kept")
VERDICT_CHOICES = ("any", "flagged", "uncertain", "kept")


def filter_samples(table: pd.DataFrame, query: str = "", show: str = "all", verdict: str = "any") -> pd.DataFrame:
    """The rows of :func:`samples_table` matching a text (in question or answer), a flag and a verdict."""
    if query:
        hit = (table["input"].astype(str).str.contains(query, case=False, regex=False)
               | table["output"].astype(str).str.contains(query, case=False, regex=False))
        table = table[hit]
    if show != "all":
        table = table[table["flagged"] == (show == "flagged")]
    if verdict != "any":
        table = table[table["verdict"] == verdict]
    return table.reset_index(drop=True)
