"""`python -m sarft_core COMMAND ...`: every capability of the library, scriptable.

Each command lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func``. Modules are discovered, so adding a command never
touches this file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from sarft_core.errors import SarftError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sarft_core", description="SaRFT Studio: safety audits for role-play fine-tuning")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and what is wrong (--help: 0)
        return exc.code if isinstance(exc.code, int) else 2
    from sarft_core.store import take_progress_target

    take_progress_target()  # a job's progress file is this command's, not its children's
    try:
        result = args.func(args)
    except SarftError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (rerun the same command to resume)", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory\n  fix: lower --batch-tokens or --limit, or use a machine with more memory", file=sys.stderr)
        return 3
    return int(result or 0)
