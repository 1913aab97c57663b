"""The evaluation engine: generate -> judge -> aggregate, each stage cached in a run directory.

Layout of an evaluation run (a :class:`sarft_core.store.RunDir` of kind ``eval``)::

    config.json, status.json, logs.jsonl
    artifacts/generations/<suite>.jsonl   raw generations / margins, appended batch by batch
    artifacts/<suite>.parquet             one row per item: prompt, response, verdict_<judge>...
    metrics.json                          every number with its 95% CI (see results.load_metrics)

Generations are keyed by (item id, prompt, system prompt, model fingerprint, precision, every
generation setting), margins by (item id, prompt, target, system prompt, model fingerprint,
precision): :func:`evaluation_key` is the one value the folder name, config.json and these keys
come from. A cached row or table read back is checked first (a damaged one is redone or named). A rerun
generates only what is missing, re-grading with another judge never loads the model, and an
answer is never reused for another model or setting (``eval`` also refuses to mix them in one
directory). Non-finite margins are refused, never saved. Verdict columns of earlier
judges are kept, so several judges accumulate side by side in the same table.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import replace
from typing import Callable

from sarft_core.errors import SarftError
from sarft_core.evaluation.generation import GenerationConfig, generate
from sarft_core.evaluation.judges.base import Judge
from sarft_core.evaluation.suites import Suite, SuiteContext, suite_metrics, trained_on
from sarft_core.store import RunDir, append_jsonl, atomic_write_json, read_jsonl, write_table

ProgressFactory = Callable[[str, int], Callable[[int, int], None]]
MARGIN_CHUNK = 32


def _key(*parts: str | None) -> str:
    return hashlib.sha256("\x00".join(p or "" for p in parts).encode("utf-8")).hexdigest()[:24]


def evaluation_key(model_fingerprint: str, generation: dict, precision: str) -> dict:
    """Everything besides the prompts that changes an evaluation's numbers: the weights, the
    precision they run in and every generation setting. The prompts' own text (and target, and
    system prompt) is part of each answer's key, so an edited prompt file is answered afresh.
    The folder name, config.json and the answers' keys are all derived from this one value."""
    return {"model_fingerprint": model_fingerprint or "", "precision": precision or "", "generation": dict(generation)}


def key_digest(key: dict, length: int = 8) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:length]


def precision_of(dtype: str, device: str) -> str:
    """The precision a model is run in, as ``dtype/device kind`` (``auto`` resolved the way the
    loader resolves it): bf16 and fp32 answers differ, and so may a GPU's and a CPU's."""
    from sarft_core.models import pick_device, pick_dtype

    dev = pick_device(device)
    return f"{str(pick_dtype(dtype, dev)).replace('torch.', '')}/{dev.split(':')[0]}"


def items_digest(items) -> str:
    """A digest of what a suite read from its prompt files (ids, prompts, targets, groups,
    references), recorded beside its numbers."""
    rows = [[it.id, it.prompt, it.target, it.group, list(it.references or [])] for it in items]
    return hashlib.sha256(json.dumps(rows, default=str).encode("utf-8")).hexdigest()[:16]


def _cached_rows(path, fields: dict) -> dict[str, dict]:
    """The answers cached in ``path`` by key, each checked: a row without its key or fields, or
    with a number that is not finite (a hand edit, a disk fault), is not an answer and is redone."""
    have = {}
    for row in read_jsonl(path):
        key = row.get("key")
        if not isinstance(key, str):
            continue
        ok = True
        for name, kind in fields.items():
            value = row.get(name)
            if kind is float:
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            else:
                ok = isinstance(value, kind)
            if not ok:
                break
        if ok:
            have[key] = row
    return have


def read_suite_table(path):
    """A suite's table (``artifacts/<suite>.parquet``) as written by :meth:`Evaluator.table`,
    checked: readable, with its id / group / prompt columns and finite margins. A damaged one is
    one SarftError naming the file and the fix (its answers are cached, so nothing is lost)."""
    import pandas as pd

    fix = (f"delete {path} and rerun the same command: the answers are cached under artifacts/generations, "
           "so only the judging is redone (name every judge whose verdicts you want back)")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own error types for a truncated or foreign file
        raise SarftError(f"{path} is damaged and cannot be read ({type(exc).__name__}: {str(exc)[:160]})", fix) from None
    missing = [c for c in ("id", "group", "prompt") if c not in df.columns]
    if missing:
        raise SarftError(f"{path} is not a suite table (no {', '.join(missing)} column)", fix)
    if "margin" in df.columns and not pd.to_numeric(df["margin"], errors="coerce").map(math.isfinite).all():
        raise SarftError(f"{path} holds margins that are not finite numbers", fix)
    return df


def _noop_factory(desc: str, total: int):
    return lambda done, total: None


class Evaluator:
    """Runs suites for one model + generation setting into one run directory."""

    def __init__(
        self,
        run: RunDir,
        load_lm: Callable[[], object],
        generation: GenerationConfig,
        judges: list[Judge],
        progress: ProgressFactory | None = None,
        log: Callable[[str], None] | None = None,
        model_fingerprint: str | None = None,
        precision: str = "",
        margin_chunk: int | None = MARGIN_CHUNK,
    ):
        self.run = run
        # margins are saved every chunk (a resume keeps them); None scores them in one pass, as the
        # published grid did (the packing into batches moves a margin's last digits)
        self.margin_chunk = margin_chunk
        # part of every cache key: answers of one model / precision / setting are never served for another
        self.model_fingerprint = model_fingerprint or ""
        self.precision = precision
        self.key = evaluation_key(self.model_fingerprint, generation.identity(), precision)
        self._setting = _key(self.model_fingerprint, json.dumps(generation.identity(), sort_keys=True), *([precision] if precision else []))
        self._margin_setting = (self.model_fingerprint, *([precision] if precision else []))
        self._load_lm = load_lm
        self._lm = None
        self.generation = generation
        self.judges = judges
        self.progress = progress or _noop_factory
        self.log = log or (lambda msg: None)
        self.inputs: dict[str, str] = {}  # suite -> digest of the items its prompt files gave
        self.trained_on: dict[str, list[str]] = {}  # suite -> ids of its items the model's alignment trained on

    @property
    def lm(self):
        if self._lm is None:
            self._lm = self._load_lm()
        return self._lm

    # --- stage 1: answers -------------------------------------------------------------
    def _cache_path(self, suite: Suite):
        return self.run.artifacts / "generations" / f"{suite.name}.jsonl"

    def generate(self, suite: Suite, items, system: str | None) -> list[dict]:
        path = self._cache_path(suite)
        have = _cached_rows(path, {"response": str})
        keys = [_key(it.id, it.prompt, system, self._setting) for it in items]
        todo = [i for i, k in enumerate(keys) if k not in have]
        if todo:
            config = replace(self.generation, system_prompt=system)
            bar = self.progress(f"{suite.name}: generating", len(todo))

            def save(batch, texts):
                for j, text in zip(batch, texts):
                    it = items[todo[j]]
                    row = {"key": keys[todo[j]], "id": it.id, "prompt": it.prompt, "response": text, "time": time.time()}
                    append_jsonl(path, row)
                    have[row["key"]] = row

            generate(self.lm, [items[i].prompt for i in todo], config, progress=bar, on_batch=save)
        return [have[k] for k in keys]

    def margins(self, suite: Suite, items, system: str | None) -> list[dict]:
        from sarft_core.evaluation.margin import refusal_margins

        path = self._cache_path(suite)
        have = _cached_rows(path, {"logp_refusal": float, "logp_compliance": float, "margin": float})
        keys = [_key(it.id, it.prompt, it.target, system, *self._margin_setting) for it in items]
        todo = [i for i, k in enumerate(keys) if k not in have]
        if todo:
            bar = self.progress(f"{suite.name}: scoring", len(todo))
            step = self.margin_chunk or len(todo)
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                rows = refusal_margins(self.lm, [items[i].prompt for i in chunk], [items[i].target for i in chunk], system=system)
                broken = [items[i].id for i, r in zip(chunk, rows)
                          if not all(math.isfinite(v) for v in (r.logp_refusal, r.logp_compliance, r.margin))]
                if broken:
                    raise SarftError(
                        f"{suite.name}: the model gave non-finite (NaN or inf) log-probabilities for {len(broken)} prompt(s) (first: {broken[0]})",
                        "its weights or precision are broken: try --dtype float32, or check the model; finished margins are kept",
                    )
                for i, r in zip(chunk, rows):
                    row = {"key": keys[i], "id": items[i].id, "prompt": items[i].prompt, "logp_refusal": r.logp_refusal,
                           "logp_compliance": r.logp_compliance, "margin": r.margin, "time": time.time()}
                    append_jsonl(path, row)
                    have[keys[i]] = row
                bar(start + len(chunk), len(todo))
        return [have[k] for k in keys]

    # --- stage 2: scores --------------------------------------------------------------
    def table(self, suite: Suite, ctx: SuiteContext):
        import pandas as pd

        items = suite.dataset(ctx)
        if not items:
            raise SarftError(f"suite {suite.name} has no items", "check its data file and --limit")
        self.inputs[suite.name] = items_digest(items)
        self.trained_on[suite.name] = trained_on(self.model_fingerprint, items, ctx)
        system = suite.system(ctx) if suite.system else self.generation.system_prompt
        if suite.solver == "margin":
            rows = self.margins(suite, items, system)
        else:
            rows = self.generate(suite, items, system)
        df = pd.DataFrame({
            "id": [it.id for it in items],
            "group": [it.group for it in items],
            "prompt": [it.prompt for it in items],
        })
        if suite.solver == "margin":
            for col in ("logp_refusal", "logp_compliance", "margin"):
                df[col] = [r[col] for r in rows]
            df["margin_positive"] = (df["margin"] > 0).astype(float)
        else:
            df["response"] = [r["response"] for r in rows]
        if any(it.meta.get("source_prompt") for it in items):
            df["source_prompt"] = [it.meta.get("source_prompt", it.prompt) for it in items]
        if suite.scorer == "rouge":
            from sarft_core.evaluation.rouge import rouge_l

            df["rouge_l"] = [rouge_l(r, it.references) for r, it in zip(df["response"], items)]
        if suite.scorer == "judge":
            self._keep_old_verdicts(suite, df)
            judge_prompts = [suite.judge_prompt(it) if suite.judge_prompt else it.prompt for it in items]
            judge_texts = [suite.judge_text(it, r) if suite.judge_text else r for it, r in zip(items, df["response"])]
            for judge in self.judges:
                bar = self.progress(f"{suite.name}: judging ({judge.name})", len(items))
                try:
                    labels, confidences = judge.judge_scored(judge_prompts, judge_texts, progress=bar)
                    df[f"verdict_{judge.name}"] = labels
                    if any(c is not None for c in confidences):
                        df[f"confidence_{judge.name}"] = confidences
                except SarftError as err:
                    partial = getattr(err, "partial", None)
                    if partial is not None:
                        df[f"verdict_{judge.name}"] = [v if v is not None else "unknown" for v in partial]
                        df[f"verdict_{judge.name}_missing"] = [v is None for v in partial]
                    write_table(df, self.run.artifacts / f"{suite.name}.parquet")
                    raise
        write_table(df, self.run.artifacts / f"{suite.name}.parquet")
        return df

    def _keep_old_verdicts(self, suite: Suite, df) -> None:
        path = self.run.artifacts / f"{suite.name}.parquet"
        if not path.is_file():
            return
        old = read_suite_table(path)
        cols = [c for c in old.columns if c.startswith(("verdict_", "confidence_")) and not c.endswith("_missing")]
        if not cols or "response" not in old.columns:
            return
        lookup = {(i, p, r): row for i, p, r, row in zip(old["id"], old["prompt"], old["response"], old[cols].to_dict("records"))}
        for col in cols:
            missing = "unknown" if col.startswith("verdict_") else None
            df[col] = [lookup.get((i, p, r), {}).get(col, missing) for i, p, r in zip(df["id"], df["prompt"], df["response"])]

    # --- stage 3: numbers -------------------------------------------------------------
    def run_suite(self, suite: Suite, ctx: SuiteContext) -> list[dict]:
        from sarft_core.evaluation.review import apply_corrections, load_corrections

        df = self.table(suite, ctx)
        records = suite_metrics(suite, apply_corrections(df, load_corrections(self.run.path).get(suite.name, {})))
        self._save_metrics(suite, records, len(df), self.inputs.get(suite.name, ""))
        return records

    def check_state(self, suites: list[Suite]) -> None:
        """Before any work: the files a resume reads back (metrics.json, the suites' tables) are
        sound, so a damaged one is reported now, not after the answers were computed."""
        from sarft_core.evaluation.results import read_metrics

        read_metrics(self.run.path / "metrics.json")
        for suite in suites:
            path = self.run.path / "artifacts" / f"{suite.name}.parquet"
            if path.is_file():
                read_suite_table(path)

    def _save_metrics(self, suite: Suite, records: list[dict], n_items: int, inputs: str = "") -> None:
        from sarft_core.evaluation.results import read_metrics

        path = self.run.path / "metrics.json"
        data = read_metrics(path)
        data.setdefault("suites", {})
        data["model"] = self.run.config().get("model")
        data["generation"] = self.generation.identity()
        data["precision"] = self.precision
        data["suites"][suite.name] = {
            "description": suite.description, "items": n_items, "records": records, "inputs": inputs,
            "judges": [j.describe() for j in self.judges] if suite.scorer == "judge" else [], "updated": time.time(),
            **trained_on_note(self.trained_on.get(suite.name, []), n_items),
        }
        atomic_write_json(path, data)


def trained_on_note(ids: list[str], n_items: int) -> dict:
    """What metrics.json says of a suite whose prompts include the model's own alignment training
    prompts (nothing when none do): how many, which, and the held-out suite to use instead."""
    if not ids:
        return {}
    return {"trained_on": {"items": len(ids), "of": n_items, "ids": ids,
                           "note": (f"{len(ids)} of these {n_items} prompts are AdvBench rows this model's alignment trained on: "
                                    "its numbers overstate refusal on unseen prompts; the *-heldout suites leave them out")}}


def summary_table(records: list[dict]) -> str:
    """Plain-text table of metric records; rates and shares (the metric registry's kinds that are
    percentages: refusal, compliance, the margin's share) shown in %, the margin and ROUGE-L as they are."""
    from sarft_core.evaluation.metric_registry import metric_info

    lines = [f"{'suite':<12} {'group':<10} {'metric':<16} {'judge':<10} {'value':>8} {'95% CI':>17} {'n':>5} {'unk':>4}"]
    for r in records:
        scale = 100.0 if metric_info(r["metric"]).percent else 1.0
        fmt = (lambda v: "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.2f}")
        ci = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        lines.append(
            f"{r['suite']:<12} {r['group']:<10} {r['metric']:<16} {r['judge'] or '-':<10} {fmt(r['value']):>8} {ci:>17} {r['n']:>5} {r.get('n_unknown', 0):>4}"
        )
    return "\n".join(lines)
