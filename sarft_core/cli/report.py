"""`report`: a self-contained HTML audit report of a run, several runs, or a survey."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="self-contained HTML audit report (opens offline in any browser)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Profile, RDS plots and flagged samples, training curves, evaluation with confidence intervals, "
                    "SFT vs SaRFT comparison and trait-vs-degradation plots: whatever the given runs hold.")
    p.add_argument("target", nargs="?", default=None,
                   help="a run directory, a folder of runs, a survey directory or a survey table")
    p.add_argument("--runs", default=None, help="comma-separated run directories to compare (paths, or names inside TARGET)")
    p.add_argument("--out", required=True, help="output .html file (written atomically)")
    p.add_argument("--title", default=None, help="report title (default: from the runs' role)")
    p.add_argument("--examples", type=int, default=8, help="flagged samples and generations shown per run")
    p.set_defaults(func=run)


def run(args) -> int:
    from sarft_core.errors import SarftError
    from sarft_core.report import resolve_sources, write_report

    if args.examples < 0:
        raise SarftError("--examples must be 0 or more", "give e.g. --examples 8")
    from sarft_core.cli._args import check_output

    check_output(args.out, {"TARGET": args.target}, types=(".html", ".htm"))  # before any rendering
    sources = resolve_sources(args.target, (args.runs or "").split(","))
    out, n_figures = write_report(sources, args.out, args.title, args.examples)
    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({len(sources.runs)} run(s), {len(sources.survey_tables)} survey table(s), {n_figures} figures, {size:.1f} MB)")
    from sarft_core import audit

    for run in sources.runs:
        for path in audit.stale_side_files(run.path / audit.SCORES_FILE):
            print(f"note: {run.name}: {audit.stale_note(path)}", file=sys.stderr)
    return 0
