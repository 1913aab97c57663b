"""One click for the experiment: SFT vs SaRFT on one character, and the base model, each trained
and evaluated as a background job (the Training page's button; interfaces layer: it starts jobs)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from sarft_core import jobs
from sarft_core.errors import SarftError
from sarft_core.jobs import cli_args, cli_argv, format_command

EXPERIMENT_METHODS = ("sft", "sarft")
EXPERIMENT_SUITES = ("advbench", "probes")


def train_steps(samples: int, epochs: float, batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps of a run (as the HF Trainer counts them): the trainer's own count."""
    from sarft_core.training.run import TrainConfig, planned_steps

    return planned_steps(samples, TrainConfig(epochs=epochs, batch_size=batch_size, grad_accum=grad_accum))


def experiment_plan(role: str, samples: int, out_root: str | Path, stamp: str, seed: int = 0, limit: int | None = None,
                    eval_limit: int | None = 50, suites: tuple[str, ...] = EXPERIMENT_SUITES, model_args: list[str] = (),
                    data_args: list[str] = ()) -> list[dict]:
    """The jobs of "SFT vs SaRFT on this character": per method a training run on the same data, seed
    and recipe (the experiment's: reproduce.DEFAULT_TRAIN) then its evaluation, and the base model's
    evaluation on the same suites. Each step: ``label``, ``method``, ``out`` (the training run; None
    for the base model), ``train`` (its arguments, None for the base model), ``eval`` (arguments),
    ``steps`` (optimizer steps)."""
    from sarft_core.cli.train import recipe_args
    from sarft_core.reproduce import DEFAULT_TRAIN, recipe_settings

    used = min(samples, limit) if limit else samples
    if used < 1:
        raise SarftError(f"the role {role!r} has no training samples in this data", "pick another role or data source")
    evaluate = ["--suite", ",".join(suites), *cli_args([("--limit", eval_limit or None)])]
    slug = "".join(c if c.isalnum() else "-" for c in role).strip("-")
    steps = train_steps(used, DEFAULT_TRAIN["epochs"], DEFAULT_TRAIN["batch_size"], DEFAULT_TRAIN["grad_accum"])
    plan = []
    for method in EXPERIMENT_METHODS:
        out = str(Path(out_root) / f"{stamp}-experiment-{method}-{slug}")
        train = ["train", *cli_args([("--method", method), ("--role", role), ("--lambda", DEFAULT_TRAIN["lam"] if method != "sft" else None),
                                     ("--peft", DEFAULT_TRAIN["peft"]), ("--epochs", DEFAULT_TRAIN["epochs"]), ("--lr", DEFAULT_TRAIN["lr"]),
                                     ("--seed", str(seed)), ("--limit", limit or None)]),
                 *recipe_args(recipe_settings("experiment", DEFAULT_TRAIN["peft"])), *data_args, *model_args, "--out", out]
        plan.append({"label": f"experiment {method} · {role}", "method": method, "out": out, "train": train,
                     "eval": ["eval", "--run", out, *evaluate], "steps": steps})
    plan.append({"label": f"experiment base model · {role}", "method": "base", "out": None, "train": None,
                 "eval": ["eval", *(list(model_args) or ["--model", "embedded-aligned"]), *evaluate], "steps": 0})
    return plan


def plan_commands(step: dict) -> str:
    """The shell line a step runs: its training then, only if that succeeded, its evaluation."""
    parts = [step["train"], step["eval"]] if step["train"] else [step["eval"]]
    return " && ".join(format_command(cli_argv(*p)) for p in parts)


def chained_launcher(first: list[str]) -> list[str]:
    """A job launcher that runs ``python -m sarft_core FIRST...`` and then, if it succeeded, the
    job's own command: one job (one process group, one log, one cancel) for train-then-evaluate."""
    return ["/bin/sh", "-c", f'{shlex.join(cli_argv(*first))} && exec "$@"', "sh", sys.executable, "-m", "sarft_core"]


def launch_experiment(plan: list[dict]) -> list:
    """Start every step of ``plan`` as a background job; every command line is checked before any starts."""
    for step in plan:
        for args in (step["train"], step["eval"]):
            if args:
                jobs.check_command_line(args)
    started = []
    for step in plan:
        if step["train"]:
            started.append(jobs.start(step["eval"], kind="train", run_dir=step["out"], label=step["label"],
                                      launcher=chained_launcher(step["train"])))
        else:
            started.append(jobs.start(step["eval"], kind="eval", label=step["label"]))
    return started
