"""`reproduce`: the paper's main experiment in miniature (characters x methods x seeds)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from sarft_core.cli._config_args import Option, add_config_options, config_from_args as typed_config


# the grid's characters, methods, seeds, model and data: defaults and types come from ReproduceConfig
OPTIONS = {
    "villains": Option("comma-separated RoleBench characters counted as villains"),
    "benevolent": Option("comma-separated RoleBench characters counted as benevolent"),
    "methods": Option("comma-separated training methods (each trained from the same base), and/or the selection experiment's arms "
                      "(sarft-top, random-budget, flip-bottom, sft-top, sft-bottom; with -inf: ranked by measured influence); "
                      "methods added to an existing grid add their cells"),
    "selection_fraction": Option("the selection arms' fraction F of each character's samples"),
    "seeds": Option("comma-separated seeds"),
    "model": Option("the base model every method starts from"),
    "data": Option("RoleBench JSONL file(s), comma-separated; empty: the role-specific test set and its RoleGPT answers"),
    "profiles": Option("role prompts; empty: SaRFT's role_prompts.json in the data dir"),
    "data_dir": Option("reference data folder; empty: $SARFT_DATA_DIR or ../shared/data"),
}


def register(subparsers) -> None:
    from sarft_core.reproduce import DEFAULT_TRAIN, ReproduceConfig

    p = subparsers.add_parser(
        "reproduce", help="the paper's main experiment in miniature: villains and heroes x SFT/SaRFT/Random/Flip x seeds",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="grid directory (rerun the same command to resume)")
    add_config_options(p, ReproduceConfig, OPTIONS)
    p.add_argument("--train-json", default=None, help=f"JSON object overriding the training protocol (default {json.dumps(DEFAULT_TRAIN)})")
    p.add_argument("--panel-json", default=None, help="JSON object overriding the evaluation panel (sarft_core.evaluation.panel.PanelConfig)")
    p.add_argument("--benchmarks", default="", help="registered file benchmarks (`benchmark add`) the panel also runs, comma-separated: "
                                                   "a refusal-rate column each (a grid's benchmarks are part of its settings)")
    p.add_argument("--workers", type=int, default=1, help="local processes working on the grid (one CPU thread each)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of this process")
    p.add_argument("--aggregate-only", action="store_true", help="rebuild the table and report from the finished cells")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _json_object(text: str | None, what: str) -> dict:
    from sarft_core.errors import SarftError

    if not text:
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SarftError(f"{what} is not valid JSON ({exc.msg})", f"give {what} a JSON object, e.g. '{{\"epochs\": 2}}'") from None
    if not isinstance(obj, dict):
        raise SarftError(f"{what} must be a JSON object", f"give {what} a JSON object, e.g. '{{\"epochs\": 2}}'")
    return obj


def config_from_args(args):
    from sarft_core.errors import SarftError
    from sarft_core.evaluation.panel import PanelConfig
    from sarft_core.reproduce import DEFAULT_PANEL, DEFAULT_TRAIN, ReproduceConfig
    from sarft_core.training import TrainConfig

    train = dict(DEFAULT_TRAIN, **_json_object(args.train_json, "--train-json"))
    known = set(TrainConfig.__dataclass_fields__) - {"method", "role", "data", "profiles", "model", "seed", "dtype", "device"}
    bad = sorted(set(train) - known)
    if bad:
        raise SarftError(f"--train-json has unknown key(s) {', '.join(bad)}", f"use keys of the train command's options: {', '.join(sorted(known))}")
    panel = dict(DEFAULT_PANEL, **_json_object(args.panel_json, "--panel-json"))
    bad = sorted(set(panel) - set(PanelConfig.__dataclass_fields__) - {"data_dir"})
    if bad:
        raise SarftError(f"--panel-json has unknown key(s) {', '.join(bad)}", f"use keys of {', '.join(PanelConfig.__dataclass_fields__)}")
    names = [b.strip() for b in (args.benchmarks or "").split(",") if b.strip()]
    if names:
        panel["benchmarks"] = list(dict.fromkeys(panel.get("benchmarks", []) + names))
    return dataclasses.replace(typed_config(ReproduceConfig, args), train=train, panel=panel)


def run(args) -> int:
    import torch

    from sarft_core.gridview import aggregate
    from sarft_core.reproduce import open_grid, plan_cells, run_pending, spawn_workers
    from sarft_core.store import Progress
    from sarft_core.validation import Range, check_number

    check_number(args.workers, Range(lo=1, hi=1024, integer=True, option="--workers", hint="give a positive number of processes"))
    check_number(args.threads, Range(lo=1, hi=4096, integer=True, optional=True, option="--threads", hint="give a positive number of CPU threads"))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    grid = open_grid(args.out, cfg)
    t0 = time.time()
    if not args.aggregate_only:
        cells = plan_cells(cfg)
        print(f"{len(cells)} cells ({len(grid.pending())} to do): {len(cfg.roles)} characters x {len(cfg.methods)} methods x "
              f"{len(cfg.seeds)} seeds + base; torch threads {torch.get_num_threads()}", file=sys.stderr)
        if args.worker:
            run_pending(grid, log=lambda m: print(m, file=sys.stderr, flush=True))
            return 0
        grid.run.set_status("running", pid=os.getpid())
        try:
            if args.workers > 1:
                report = Progress(grid.path, unit="cell", phase=f"reproduce ({args.workers} workers)")
                spawn_workers(grid.path, _worker_args(args), args.workers,
                              on_poll=lambda: report(len(cells) - len(grid.pending()), len(cells)))
            else:
                run_pending(grid, log=lambda m: print(m, file=sys.stderr, flush=True))
        except KeyboardInterrupt:
            grid.run.set_status("cancelled")
            raise
        except Exception as err:
            grid.run.set_status("failed", error=str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
    left = len(grid.pending())
    if left == 0:
        grid.run.set_status("completed", pending=0)
    else:  # cells held by other workers, or --aggregate-only: the run's state stays what it was
        from sarft_core.store import STATES

        state = grid.run.status().get("state")
        grid.run.set_status(state if state in STATES else "created", pending=left)
    out = aggregate(grid)
    print(out["markdown"])
    done = len(out["cells"])
    print(f"{done} of {len(plan_cells(cfg))} cells; table: {Path(args.out) / 'table.md'}, report: {Path(args.out) / 'report.html'}"
          f" ({time.time() - t0:.0f} s)")
    return 0


def _worker_args(args) -> list[str]:
    argv = ["--out", args.out, "--villains", args.villains, "--benevolent", args.benevolent, "--methods", args.methods,
            "--seeds", args.seeds, "--model", args.model, "--selection-fraction", str(args.selection_fraction)]
    for flag, value in (("--data", args.data), ("--profiles", args.profiles), ("--data-dir", args.data_dir),
                        ("--train-json", args.train_json), ("--panel-json", args.panel_json), ("--benchmarks", args.benchmarks)):
        if value:
            argv += [flag, value]
    return argv
