"""`benchmark`: register a file of harmful prompts (HarmBench's behaviours, say) as a named suite.

One registration (kept in the workspace's benchmarks.json) reaches `eval --suite NAME`, the
Evaluation page's suite list, `reproduce --benchmarks NAME` (a column of the grid's table and
report) and the HTML report of any evaluation run that used it.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="register a file of harmful prompts as a named suite (add / list / remove)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser("add", help="register FILE as the suite NAME")
    add.add_argument("name", help="one lower-case word, e.g. harmbench")
    add.add_argument("file", help="a .csv, .jsonl, .json or .parquet file with a prompt column")
    add.add_argument("--prompt-col", default=None, help="the prompt column (default: the first of prompt, goal, behavior, ...)")
    add.add_argument("--description", default="", help="one line shown beside the name")
    actions.add_parser("list", help="the registered benchmarks")
    remove = actions.add_parser("remove", help="forget a registered benchmark (its evaluations stay)")
    remove.add_argument("name")
    p.set_defaults(func=run)


def run(args) -> int:
    from sarft_core.evaluation import suites

    if args.action == "add":
        suite = suites.add_benchmark(args.name, args.file, args.prompt_col, args.description)
        entry = suites.read_benchmarks()[suite.name]
        print(f"registered {suite.name}: {entry['prompts']} prompts from {entry['path']} (in {suites.benchmarks_path()})\n"
              f"  evaluate it: python -m sarft_core eval --suite {suite.name} ...; in the grid: reproduce --benchmarks {suite.name}")
    elif args.action == "list":
        entries = suites.read_benchmarks()
        if not entries:
            print(f"no registered benchmarks (in {suites.benchmarks_path()}); add one with: python -m sarft_core benchmark add NAME FILE")
        for name, entry in entries.items():
            print(f"{name}: {entry.get('prompts', '?')} prompts from {entry['path']} · {entry.get('description', '')}")
    else:
        suites.remove_benchmark(args.name)
        print(f"removed {args.name}")
    return 0
