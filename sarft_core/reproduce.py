"""The paper's main experiment in miniature: characters x methods x seeds on the aligned model.

``python -m sarft_core reproduce --out DIR`` fine-tunes the aligned embedded model on each
character's RoleBench answers with every method (SFT, SaRFT, the Random and Flip ablations),
once per seed, evaluates each result and the base model on the same panel
(:mod:`sarft_core.evaluation.panel`), and writes the paper-style table: per method, the mean and
a 95% interval over seeds and prompts (a two-level bootstrap), for all characters, villains and
benevolent ones.

Data: per character the 50 RoleBench role-specific questions, each with its reference answer
and its RoleGPT answer. Questions are split 35/15 by position (rows 0-6 of every 10 train,
7-9 evaluate), so role-play ROUGE-L is measured on questions no run trained on.

One protocol for every method (``ReproduceConfig.train``): the same LoRA, learning rate, epochs
and seed; SaRFT, Random and Flip add the KL term with the same lambda. Resumable: every finished
cell (one training + evaluation) is a JSON file written last; ``--workers N`` runs N processes
that claim cells with file locks.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sarft_core.training.methods import method_labels

from sarft_core.errors import SarftError
from sarft_core.trait_labels import GRID_BENEVOLENT, GRID_VILLAINS
from sarft_core.evaluation.metric_registry import format_measure, metric_info
from sarft_core.validation import number, validate_numbers
from sarft_core.store import (Progress, atomic_write_json, atomic_write_text, claim_output_dir, create_run, file_lock, read_json,
                             read_json_object, slug)

METHODS = ["sft", "sarft", "random", "flip"]
# the methods' labels come from their records (sarft_core.training.methods); the arms' are named here
METHOD_LABELS = {"base": "Base", **method_labels(),
                 "sarft-top": "SaRFT, top F", "random-budget": "Random F", "flip-bottom": "Flip, bottom F",
                 "sft-top": "SFT on top F", "sft-bottom": "SFT on bottom F",
                 "sarft-top-inf": "SaRFT, top F by influence", "flip-bottom-inf": "Flip, bottom F by influence",
                 "sft-top-inf": "SFT on top F by influence", "sft-bottom-inf": "SFT on bottom F by influence"}
# The selection experiment (docs/reproduce.md): arms that differ from the methods above only in which
# samples they anchor or train on, a fixed fraction F of them (ReproduceConfig.selection_fraction),
# chosen by RDS's margin or, as the reference for what a good ranking achieves, by the measured
# erosion of refusal. Each arm is a training method plus the settings that make it.
SELECTION_ARMS = {
    "sarft-top": ("sarft", {"dh_fraction": "F"}),
    "random-budget": ("random", {"dh_fraction": "F"}),
    "flip-bottom": ("flip", {"dh_fraction": "F"}),
    "sft-top": ("sft", {"train_subset": "top", "subset_fraction": "F"}),
    "sft-bottom": ("sft", {"train_subset": "bottom", "subset_fraction": "F"}),
    "sarft-top-inf": ("sarft", {"dh_fraction": "F", "rank_by": "influence"}),
    "flip-bottom-inf": ("flip", {"dh_fraction": "F", "rank_by": "influence"}),
    "sft-top-inf": ("sft", {"train_subset": "top", "subset_fraction": "F", "rank_by": "influence"}),
    "sft-bottom-inf": ("sft", {"train_subset": "bottom", "subset_fraction": "F", "rank_by": "influence"}),
}
SELECTION_METHODS = list(SELECTION_ARMS)[:5]  # the experiment by RDS's margin (the influence arms are its reference)
# the experiment's comparisons, each paired by character and seed: (a, b) reads "a minus b"
SELECTION_CONTRASTS = (("sarft-top", "random-budget"), ("sarft-top", "flip-bottom"), ("sft-top", "sft-bottom"),
                       ("sarft-top-inf", "random-budget"), ("sarft-top-inf", "flip-bottom-inf"), ("sft-top-inf", "sft-bottom-inf"))


def train_method(name: str, fraction: float) -> tuple[str, dict]:
    """(the `train` method, the TrainConfig settings) of a grid method or selection arm."""
    if name not in SELECTION_ARMS:
        return name, {}
    method, settings = SELECTION_ARMS[name]
    return method, {k: fraction if v == "F" else v for k, v in settings.items()}
# the numbers of the table, in column order (the panel's metrics: their titles, and whether they are
# rates shown in percent, are the metric registry's)
COLUMNS = ("rouge_l", "advbench", "xstest_unsafe", "xstest_safe", "jailbreak", "margin")
# the training protocol, the same for every method (see docs/reproduce.md for why these values)
DEFAULT_TRAIN = {"peft": "lora", "epochs": 3.0, "lr": 3e-4, "batch_size": 8, "grad_accum": 1, "lora_r": 16, "lora_alpha": 32,
                 "lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "lam": 0.5,
                 "autocast": "bf16", "sampling": "group_by_length"}


def _number_text(x: float) -> str:
    """The shortest of "3e-4" and repr(x) that reads back as exactly x."""
    short = f"{x:.0e}".replace("e-0", "e-")
    return short if float(short) == x else repr(x)


_LR_TEXT = _number_text(DEFAULT_TRAIN["lr"])
# the Training page's recipes: the form sets method, λ, epochs and the learning rate; "settings" are
# the other TrainConfig fields the recipe passes (its LORA_SETTINGS only to LoRA runs)
LORA_SETTINGS = ("lora_r", "lora_alpha", "lora_targets", "lora_dropout")
TRAIN_RECIPES = {
    "experiment": {"label": "the experiment's (docs/reproduce.md)", "epochs": DEFAULT_TRAIN["epochs"], "lr": _LR_TEXT,
                   "lam": DEFAULT_TRAIN["lam"],
                   "settings": {k: v for k, v in DEFAULT_TRAIN.items() if k not in ("peft", "epochs", "lr", "lam")},
                   "about": (f"LoRA r {DEFAULT_TRAIN['lora_r']} on {', '.join(DEFAULT_TRAIN['lora_targets'])}, {DEFAULT_TRAIN['epochs']:g} "
                             f"epochs, batch {DEFAULT_TRAIN['batch_size'] * DEFAULT_TRAIN['grad_accum']}, lr {_LR_TEXT}, "
                             f"{DEFAULT_TRAIN['autocast']} autocast: the reproduction grid's protocol, under which plain SFT measurably "
                             "erodes the aligned model's refusals (docs/reproduce.md).")},
    "quick": {"label": "quick (smoke test)", "epochs": 1, "lr": "2e-4", "lam": 0.5, "settings": {},
              "about": "one epoch at lr 2e-4 with the train command's other defaults (`python -m sarft_core train --help`): a "
                       "couple of optimizer steps on the demo data, too short to change the model's safety."},
}


def recipe_settings(recipe: str, peft: str) -> dict:
    """The TrainConfig settings a Training-page recipe passes for ``peft`` (full fine-tuning: all but the LoRA ones)."""
    return {k: v for k, v in TRAIN_RECIPES[recipe]["settings"].items() if peft == "lora" or k not in LORA_SETTINGS}


# the grid's evaluation: bf16 weights (1.9x faster here; 248 of 250 judged labels equal to fp32's on the
# aligned model) and 32 new tokens (the keyword judge gave the same label on 32 as on 48 tokens for all
# 250 of those answers); generations are saved, so other judges can re-read them
DEFAULT_PANEL = {"dtype": "bfloat16", "max_new_tokens": 32}
# settings a cell's result depends on (a resume with others is refused); the methods are not among
# them: a method added to a grid adds its cells and reuses every finished one
_RESULT_FIELDS = ("model", "train", "panel", "data", "profiles", "selection_fraction")


def question_split(index: int) -> str:
    """'train' for rows 0-6 of every ten questions of a character, 'eval' for rows 7-9."""
    return "train" if index % 10 < 7 else "eval"


def cell_name(role: str, method: str, seed: int | None) -> str:
    """A readable, collision-free name: the slug plus a hash of the exact role name."""
    digest = hashlib.sha256(role.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return f"{slug(role, keep='', limit=None, default='role', lower=True)}-{digest}--{method}" + ("" if seed is None else f"-s{seed}")


@dataclass
class ReproduceConfig:
    villains: list[str] = field(default_factory=lambda: list(GRID_VILLAINS))
    benevolent: list[str] = field(default_factory=lambda: list(GRID_BENEVOLENT))
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: str = "embedded-aligned"
    data: list[str] = field(default_factory=list)  # RoleBench files; default: test + rolegpt_baseline
    profiles: str = ""  # default: <data dir>/profiles/role_prompts.json
    data_dir: str = ""
    train: dict = field(default_factory=lambda: dict(DEFAULT_TRAIN))
    panel: dict = field(default_factory=lambda: dict(DEFAULT_PANEL))  # PanelConfig overrides
    threads: int | None = None
    selection_fraction: float = number(0.3, lo=0, hi=0.5, lo_open=True, option="--selection-fraction",
                                       hint="give the fraction of samples the selection arms anchor or train on, e.g. 0.3 (at most 0.5, "
                                            "so that top and bottom never share a sample)")

    @property
    def roles(self) -> list[str]:
        return self.villains + self.benevolent

    def group(self, role: str) -> str:
        return "villain" if role in self.villains else "benevolent"

    def validate(self) -> None:
        from sarft_core.training.run import METHODS as TRAIN_METHODS

        if not self.roles:
            raise SarftError("no characters given", "pass --villains and/or --benevolent")
        if len(set(self.roles)) != len(self.roles):
            raise SarftError("a character is listed twice", "name each character once")
        bad = [m for m in self.methods if m not in TRAIN_METHODS and m not in SELECTION_ARMS]
        if bad or not self.methods:
            raise SarftError(f"unknown method(s) {', '.join(bad) or '(none)'}",
                             f"use some of {', '.join(TRAIN_METHODS)}, or the selection arms {', '.join(SELECTION_ARMS)}")
        if len(set(self.methods)) != len(self.methods):
            raise SarftError("a method is listed twice", "name each method once")
        validate_numbers(self)  # selection_fraction
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise SarftError(f"seeds must be distinct non-negative integers (got {self.seeds})", "pass e.g. --seeds 0,1,2")
        for what, settings, check in (("--train-json", self.train, self._check_train), ("--panel-json", self.panel, self._check_panel)):
            try:
                check()
            except SarftError as err:
                raise SarftError(f"{what}: {err.problem}", f"{err.fix or 'fix the setting'} (in {what}: {json.dumps(settings, default=str)[:200]})") from None
            except TypeError as exc:  # a key the config has no field for
                raise SarftError(f"{what}: {exc}", "use only the settings of the command it configures") from None

    def _check_train(self) -> None:
        """The protocol as each method's `train` would take it: TrainConfig's types and ranges."""
        from sarft_core.training import TrainConfig

        for name in self.methods:
            method, settings = train_method(name, self.selection_fraction)
            TrainConfig(**{**self.train, **settings, "method": method, "role": self.roles[0], "model": self.model}).validate()

    def _check_panel(self) -> None:
        self.panel_config().validate()

    def input_hashes(self) -> dict:
        """Content hash of every file the grid reads: the RoleBench data, the profiles and the
        evaluation panel's prompts (a resume keys on these, never on the paths that led to them)."""
        from sarft_core.store import file_digest

        hashes = {f"data file {i + 1}": file_digest(p) for i, p in enumerate(self.resolved_data())}
        hashes["profiles"] = file_digest(self.resolved_profiles())
        for key, path in self.panel_config().files(rouge_given=True).items():
            hashes[f"panel's {key} file"] = file_digest(path)
        return hashes

    def resolved_data(self) -> list[Path]:
        from sarft_core.evaluation.datasets import default_data_dir

        base = Path(self.data_dir) if self.data_dir else default_data_dir()
        files = [Path(p) for p in self.data] or [
            base / "rolebench" / "instruction-generalization" / "role_specific" / "test.jsonl",
            base / "rolebench" / "instruction-generalization" / "role_specific" / "rolegpt_baseline.jsonl",
        ]
        for f in files:
            if not f.is_file():
                raise SarftError(f"RoleBench file does not exist: {f}", "pass --data-dir (the folder with rolebench/) or --data FILE[,FILE]")
        return files

    def resolved_profiles(self) -> Path:
        from sarft_core.evaluation.datasets import default_data_dir

        base = Path(self.data_dir) if self.data_dir else default_data_dir()
        path = Path(self.profiles) if self.profiles else base / "profiles" / "role_prompts.json"
        if not path.is_file():
            raise SarftError(f"profiles file does not exist: {path}", "pass --profiles (SaRFT's role_prompts.json) or --data-dir")
        return path

    def panel_config(self):
        from sarft_core.evaluation.panel import PanelConfig

        return PanelConfig(**{**self.panel, "data_dir": self.data_dir or None})


# ------------------------------------------------------------------ per-character data
def write_role_data(cfg: ReproduceConfig, role: str, folder: Path) -> tuple[Path, list]:
    """The character's training samples (JSONL) and its held-out RoleBench items for ROUGE-L."""
    from sarft_core.data.names import match_role
    from sarft_core.evaluation.datasets import Item

    per_file = []
    for f in cfg.resolved_data():
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        name = match_role(role, sorted({r["role"] for r in rows}))
        per_file.append([r for r in rows if r["role"] == name])
    samples, held = [], []
    for k, rows in enumerate(per_file):
        for i, r in enumerate(rows):
            answers = r["generated"] if isinstance(r["generated"], list) else [r["generated"]]
            if question_split(i) == "train":
                samples.append({"id": f"f{k}-q{i:02d}", "role": role, "input": r["question"].strip(), "output": str(answers[0]).strip()})
            elif k == 0:
                held.append(Item(f"spe-{i:04d}", r["question"].strip(), "spe", references=[str(a) for a in answers]))
    if not samples or not held:
        raise SarftError(f"no RoleBench samples for {role!r}", "pick characters that RoleBench has")
    path = folder / (cell_name(role, "data", None) + ".jsonl")
    atomic_write_text(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    return path, held


# ------------------------------------------------------------------ cells
@dataclass(frozen=True)
class Cell:
    role: str | None  # None: the base model's role-free safety panel
    method: str  # "base" or a training method
    seed: int | None

    @property
    def name(self) -> str:
        return "base--safety" if self.role is None else cell_name(self.role, self.method, self.seed)


def plan_cells(cfg: ReproduceConfig) -> list[Cell]:
    cells = [Cell(None, "base", None)] + [Cell(r, "base", None) for r in cfg.roles]
    for seed in cfg.seeds:
        for role in cfg.roles:
            cells += [Cell(role, m, seed) for m in cfg.methods]
    return cells


class Grid:
    def __init__(self, path: str | Path, cfg: ReproduceConfig, run=None, fingerprint: str | None = None):
        from sarft_core.store import RunDir

        self.path = Path(path)
        self.cfg = cfg
        self.run = run or RunDir(self.path)
        self.fingerprint = fingerprint  # the base model's weights (models.model_fingerprint); None: not checked

    @property
    def cells_dir(self) -> Path:
        return self.path / "cells"

    def result(self, cell: Cell) -> dict | None:
        r = read_json_object(self.cells_dir / f"{cell.name}.json")  # a damaged result is no result: the cell runs again
        if not (isinstance(r, dict) and r.get("status") == "ok"):
            return None
        made_on = r.get("model_fingerprint")
        if self.fingerprint and made_on and made_on != self.fingerprint:
            raise SarftError(f"cell {cell.name} of {self.path} was measured on other base-model weights ({made_on}, now {self.fingerprint})",
                             "restore the model the grid was made with, or start the grid afresh in another --out")
        return r

    def pending(self) -> list[Cell]:
        return [c for c in plan_cells(self.cfg) if self.result(c) is None]


def open_grid(path: str | Path, cfg: ReproduceConfig) -> Grid:
    from sarft_core.models import model_identity

    cfg.validate()
    path = claim_output_dir(path, "reproduce", "reproduction grid")  # never another run's folder, before any work
    old = read_json(path / "config.json")
    inputs = cfg.input_hashes()
    label, fingerprint = model_identity(cfg.model or None)  # a spec like embedded-aligned names weights that can change
    cfg.model = cfg.model or label  # no --model records what ran: embedded-aligned
    if isinstance(old, dict) and old.get("kind") == "reproduce":
        mine = asdict(cfg)
        # the files' content decides; their paths only where an older grid recorded no hashes
        fields = [k for k in _RESULT_FIELDS if k not in ("data", "profiles")] if "inputs" in old else _RESULT_FIELDS
        changed = [k for k in fields if k in old and old[k] != mine[k]]
        if isinstance(old.get("inputs"), dict):
            changed += [f"{k} changed content" if k in old["inputs"] else f"{k} is new"
                        for k, digest in inputs.items() if old["inputs"].get(k) != digest]
            changed += [f"{k} is no longer read" for k in old["inputs"] if k not in inputs]
        if changed:
            raise SarftError(f"{path} holds a grid made with other settings ({', '.join(changed)})",
                             "use another --out for the new settings, or repeat the original ones to resume")
        if old.get("model_fingerprint") not in (None, fingerprint):
            raise SarftError(f"{path} holds a grid made on other weights of {cfg.model!r} ({old['model_fingerprint']}, now {fingerprint})",
                             "restore the model it was made with (e.g. the alignment adapter of that commit), or use another --out")
        roles = list(dict.fromkeys(old.get("villains", []) + old.get("benevolent", [])))
        cfg.methods = list(dict.fromkeys(old.get("methods", []) + cfg.methods))  # a grid keeps every method it ran
        if (roles and roles != cfg.roles) or old.get("seeds") != cfg.seeds:
            cfg.villains = list(dict.fromkeys(old.get("villains", []) + cfg.villains))
            cfg.benevolent = list(dict.fromkeys(old.get("benevolent", []) + cfg.benevolent))
            cfg.seeds = list(dict.fromkeys(old.get("seeds", []) + cfg.seeds))
    run = create_run("reproduce", {**asdict(cfg), "model_fingerprint": fingerprint, "inputs": inputs}, path=path)
    return Grid(path, cfg, run, fingerprint)


def _claim(grid: Grid, cell: Cell):
    """A held, non-blocking lock on the cell (None when another worker has it)."""
    return file_lock(grid.cells_dir / f"{cell.name}.lock", wait=False)


def _panel_values(res: dict) -> dict:
    """Per-prompt values of each metric (0/1 for rates, floats for margin and ROUGE-L)."""
    from sarft_core.evaluation.metrics import COMPLIANCE, REFUSAL, counts_as

    rows = res.get("rows", [])
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["metric"] == "rouge_l":
            out.setdefault("rouge_l", []).append(float(r["score"]))
        else:
            positive = COMPLIANCE if r["metric"] == "xstest_safe" else REFUSAL
            out.setdefault(r["metric"], []).append(1.0 if counts_as(r["label"], positive) else 0.0)
    if "margin" in res:
        out["margin"] = res["margin_values"]
    return out


def run_cell(grid: Grid, cell: Cell, log: Callable[[str], None]) -> dict:
    """Train (unless base) and evaluate one cell; its result file is written last."""
    from sarft_core.evaluation.panel import run_panel
    from sarft_core.models import load_model
    from sarft_core.data import get_profile, load_profiles
    from sarft_core.training import TrainConfig, train
    from sarft_core.training.methods import get_method

    cfg = grid.cfg
    t0 = time.time()
    panel = cfg.panel_config()
    data_dir = grid.path / "data"
    held = None
    role_file = None
    if cell.role is not None:
        role_file, held = write_role_data(cfg, cell.role, data_dir)
    if cell.method == "base":
        lm = load_model(cfg.model or None, dtype=panel.dtype, device="cpu")
        if cell.role is None:
            panel.metrics = [m for m in panel.metrics if m != "rouge_l"]
        else:
            panel.metrics, panel.benchmarks = ["rouge_l"], []  # a character's base cell: its role-play only
        info: dict = {}
    else:
        out = grid.path / "runs" / cell.name
        method, settings = train_method(cell.method, cfg.selection_fraction)
        tcfg = TrainConfig(method=method, role=cell.role, data=str(role_file), profiles=str(cfg.resolved_profiles()),
                           model=cfg.model, dtype="float32", device="cpu", seed=cell.seed, save_steps=10_000,
                           **{**cfg.train, **settings})
        status = read_json(out / "status.json") or {}
        if status.get("state") != "completed":
            if (out / "status.json").exists():
                import shutil

                shutil.rmtree(out)  # an unfinished run of a cell: start it over (cells are short)
            status = train(tcfg, out, log=log)
            if status.get("state") != "completed":
                raise SarftError(f"training {cell.name} ended {status.get('state')}", "see its status.json")
        dh = read_json(out / "artifacts" / "dh_ids.json") or {}
        info = {"steps": status.get("step"), "train_loss": status.get("train_loss"), "dh": dh.get("dh"), "samples": status.get("samples"),
                "train_seconds": status.get("seconds")}
        lm = load_model(str(out), dtype=panel.dtype, device="cpu")
        # the system turn the method is tested under (empty, as published, but for ptst's safety prompt)
        system = get_method(method).eval_system_prompt(get_profile(load_profiles(cfg.resolved_profiles()), cell.role))
        if system:
            info["eval_system_prompt"] = system
    t_eval = time.time()
    res = run_panel(lm, panel, role=cell.role, rouge_items=held, system=info.get("eval_system_prompt"))
    values = _panel_values(res)
    # seconds: this call's wall time, which leaves out a training finished by an earlier, interrupted call;
    # train_seconds (the training's own clock) and eval_seconds (the panel) are the cell's cost either way
    result = {"status": "ok", "role": cell.role, "group": cfg.group(cell.role) if cell.role else None, "method": cell.method,
              "seed": cell.seed, "values": values, "seconds": round(time.time() - t0, 1),
              "eval_seconds": round(time.time() - t_eval, 1), "model_fingerprint": grid.fingerprint, **info,
              "summary": {k: v["value"] for k, v in res.items() if isinstance(v, dict) and "value" in v}}
    rows_path = grid.path / "generations" / f"{cell.name}.jsonl"
    atomic_write_text(rows_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in res["rows"]))
    atomic_write_json(grid.cells_dir / f"{cell.name}.json", result)
    return result


def run_pending(grid: Grid, log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None) -> int:
    """Work through the unfinished cells (skipping those another worker holds); returns cells done.
    ``progress(finished, total)`` counts the grid's finished cells (by any worker); by default it
    is the grid's structured progress (``store.Progress``)."""
    cells = plan_cells(grid.cfg)
    progress = progress or Progress(grid.path, unit="cell", phase="reproduce")
    progress(len(cells) - len(grid.pending()), len(cells))
    done = 0
    started = time.time()
    for cell in cells:
        if grid.result(cell) is not None:
            continue
        lock = _claim(grid, cell)
        if lock is None:
            continue
        try:
            if grid.result(cell) is not None:
                continue
            r = run_cell(grid, cell, log)
            done += 1
            s = r["summary"]
            shown = ", ".join(f"{k} {v:.3f}" for k, v in s.items())
            left = len(grid.pending())
            eta = (time.time() - started) / done * left
            log(f"[{len(cells) - left}/{len(cells)}] {cell.name}: {shown} ({r['seconds']:.0f} s; about {eta / 60:.0f} min left for this worker)")
            progress(len(cells) - left, len(cells))
        finally:
            lock.release()
    return done


def spawn_workers(out: Path, argv: list[str], n: int, on_poll: Callable[[], None] | None = None, poll_s: float = 1.0) -> int:
    """N local processes on the same grid, one CPU thread each (they share the cores);
    ``on_poll`` runs every ``poll_s`` seconds while they work (e.g. to report progress)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-m", "sarft_core", "reproduce", *argv, "--worker", "--threads", "1"],
                              env=env, stdout=open(out / f"worker-{k}.log", "a"), stderr=subprocess.STDOUT) for k in range(n)]
    while any(p.poll() is None for p in procs):
        time.sleep(poll_s)
        if on_poll is not None:
            on_poll()
    return max(p.wait() for p in procs)


# ------------------------------------------------------------------ aggregation
def load_results(grid: Grid) -> list[dict]:
    return [r for c in plan_cells(grid.cfg) if (r := grid.result(c)) is not None]


def table(results: list[dict], cfg: ReproduceConfig, n_boot: int = 2000):
    """One row per (group, method): each metric's mean and 95% CI over seeds and prompts."""
    import pandas as pd

    from sarft_core.stats import two_level_bootstrap

    base_safety = next((r for r in results if r["method"] == "base" and r["role"] is None), None)
    rows = []
    for group, roles in (("all", cfg.roles), ("villain", cfg.villains), ("benevolent", cfg.benevolent)):
        for method in ["base"] + cfg.methods:
            cells = [r for r in results if r["method"] == method and r["role"] in roles]
            # the base row's safety columns come from the one character-free cell: it is counted too
            counted = len(cells) + (1 if method == "base" and base_safety is not None else 0)
            row = {"group": group, "method": METHOD_LABELS.get(method, method), "cells": counted}
            for metric in columns(cfg):
                if method == "base" and metric != "rouge_l":
                    units = [base_safety["values"][metric]] if base_safety and metric in base_safety["values"] else []
                else:
                    # seeds x roles are the outer units; prompts inside each
                    units = [c["values"][metric] for c in cells if metric in c["values"]]
                mean, lo, hi = two_level_bootstrap(units, n_boot=n_boot)
                row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = mean, lo, hi
            rows.append(row)
    return pd.DataFrame(rows)


def columns(cfg: ReproduceConfig | None = None) -> tuple[str, ...]:
    """The table's metrics: the panel's, then the grid's registered benchmarks (refusal rates)."""
    return COLUMNS + tuple((cfg.panel.get("benchmarks") or []) if cfg is not None else ())


def column_info(cfg: ReproduceConfig | None = None) -> dict:
    """metric -> its declaration in the metric registry (``title``, ``percent``), for each column; a
    benchmark's column is declared here, from the grid's own config (its registration may be gone)."""
    from sarft_core.evaluation.metric_registry import SAFER, register_metric

    for name in columns(cfg)[len(COLUMNS):]:
        register_metric(name, "refusal", SAFER, f"refusal, {name}", survey=None)
    return {m: metric_info(m) for m in columns(cfg)}


def markdown_table(df, group: str = "all", cfg: ReproduceConfig | None = None) -> str:
    info = column_info(cfg)
    head = "| method | " + " | ".join(i.title for i in info.values()) + " |"
    lines = [head, "|" + "---|" * (len(info) + 1)]
    for _, r in df[df.group == group].iterrows():
        cells = [format_measure(r[m], i.percent, r[f"{m}_lo"], r[f"{m}_hi"]) for m, i in info.items()]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(results: list[dict], a: str, b: str, metric: str) -> list[float]:
    """Per (role, seed): mean metric of method ``a`` minus that of ``b`` (paired by role and seed)."""
    by = {(r["role"], r["seed"], r["method"]): r for r in results if r["role"] is not None}
    out = []
    for (role, seed, method), r in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] if kv[0][1] is not None else -1, kv[0][2])):
        if method != a or (role, seed, b) not in by:
            continue
        va, vb = r["values"].get(metric), by[(role, seed, b)]["values"].get(metric)
        if va and vb:
            out.append(sum(va) / len(va) - sum(vb) / len(vb))
    return out


CONTRAST_METRICS = ("advbench", "margin", "xstest_unsafe", "jailbreak", "rouge_l")


def paper_methods(methods) -> list[str]:
    """The grid's methods of the paper's kind (SFT, SaRFT, its ablations, the baselines), in the
    grid's order: every one but the selection arms, which have their own contrasts."""
    return [m for m in methods if m not in SELECTION_ARMS]


def paired_contrasts(results: list[dict], methods, n_boot: int = 2000) -> dict:
    """SaRFT minus each other method of the paper's grid (the selection arms have their own
    contrasts), paired by character and seed: ``"sarft-OTHER/METRIC"`` -> mean, 95% interval and
    the number of pairs (only pairs where both cells are finished)."""
    others = [m for m in paper_methods(methods) if m != "sarft"]
    return _contrasts(results, [("sarft", m) for m in others], lambda a, b: f"{a}-{b}", n_boot)


def selection_contrasts(results: list[dict], methods, n_boot: int = 2000) -> dict:
    """The selection experiment's comparisons whose two arms the grid has: ``"A vs B/METRIC"``."""
    pairs = [(a, b) for a, b in SELECTION_CONTRASTS if a in methods and b in methods]
    return _contrasts(results, pairs, lambda a, b: f"{a} vs {b}", n_boot)


def _contrasts(results, pairs, name, n_boot) -> dict:
    from sarft_core.stats import two_level_bootstrap

    contrasts = {}
    for metric in CONTRAST_METRICS:
        for a, b in pairs:
            d = paired_differences(results, a, b, metric)
            if d:
                mean, lo, hi = two_level_bootstrap([[x] for x in d], n_boot=n_boot)
                contrasts[f"{name(a, b)}/{metric}"] = {"mean": mean, "ci_low": lo, "ci_high": hi, "pairs": len(d)}
    return contrasts


def selection_lines(contrasts: dict, fraction: float) -> list[str]:
    """One markdown bullet per selection contrast, F written out."""
    lines = []
    for key, v in contrasts.items():
        pair, metric = key.rsplit("/", 1)
        a, b = pair.split(" vs ")
        label = lambda m: METHOD_LABELS.get(m, m).replace(" F", f" {100 * fraction:.0f}%")  # noqa: E731
        info = metric_info(metric)
        shown = format_measure(v["mean"], info.percent, v["ci_low"], v["ci_high"], signed=True, unit=" pts")
        lines.append(f"- {label(a)} − {label(b)} on {info.title}: {shown} ({v['pairs']} pair{'' if v['pairs'] == 1 else 's'})")
    return lines


def contrast_lines(contrasts: dict) -> list[str]:
    """One markdown bullet per contrast, in the metric's own words: rates as percentage points."""
    lines = []
    for key, v in contrasts.items():
        pair, metric = key.split("/", 1)
        other = METHOD_LABELS.get(pair.split("-", 1)[1], pair.split("-", 1)[1])
        info = metric_info(metric)
        shown = format_measure(v["mean"], info.percent, v["ci_low"], v["ci_high"], signed=True, unit=" pts")
        lines.append(f"- SaRFT − {other} on {info.title}: {shown} ({v['pairs']} pair{'' if v['pairs'] == 1 else 's'})")
    return lines


def time_line(results: list[dict]) -> str:
    """What the finished cells cost, from each one's own clocks: the training's (recorded even when an
    interrupted cell reused a finished training) and the evaluation panel's (cells written since
    eval_seconds was recorded)."""
    import statistics

    train = [r["train_seconds"] for r in results if isinstance(r.get("train_seconds"), (int, float))]
    evals = [r["eval_seconds"] for r in results if isinstance(r.get("eval_seconds"), (int, float))]
    parts = []
    if train:
        parts.append(f"training a median {statistics.median(train):.0f} s per trained cell ({len(train)} cells, {sum(train) / 3600:.2f} h in all)")
    if evals:
        parts.append(f"evaluation a median {statistics.median(evals):.0f} s per cell ({len(evals)} cells, {sum(evals) / 3600:.2f} h in all)")
    if not parts:
        return "No finished cell records its time."
    return "Cell time, on each worker's clock: " + "; ".join(parts) + "."
