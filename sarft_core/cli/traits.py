"""`traits`: rate every role on malevolence, aggression, deceptiveness and benevolence."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sarft_core.errors import SarftError


def register(subparsers) -> None:
    p = subparsers.add_parser("traits", help="character traits of every role (one row per role, each trait in [0, 1])",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--profiles", default=None, help="role profiles JSON (default: the demo profiles)")
    p.add_argument("--source", default="default", choices=["default", "openai", "csv"],
                   help="default: offline embedding rater; openai: an LLM rater (OpenAI-compatible endpoint); csv: your annotations")
    p.add_argument("--csv", default=None, help="annotations for --source csv: a role column and trait columns in [0, 1]")
    p.add_argument("--roles", default=None, help="comma-separated subset of roles (default: all)")
    p.add_argument("--base-url", default=None, help="--source openai: endpoint (default: $OPENAI_BASE_URL or OpenAI)")
    p.add_argument("--rater-model", default=None, help="--source openai: model name (default: $SARFT_TRAIT_MODEL or gpt-4o-mini)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="--source openai: environment variable holding the key")
    p.add_argument("--no-cache", action="store_true", help="--source openai: ask again even when an answer is cached")
    p.add_argument("--out", required=True, help="output table (.csv, .jsonl or .parquet)")
    p.set_defaults(func=run)


def select_profiles(profiles_path: str | None, roles: str | None) -> dict:
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles

    profiles = load_profiles(profiles_path or DEMO_PROFILES)
    if not roles or roles.strip().lower() == "all":
        return profiles
    chosen = {}
    for name in [r.strip() for r in roles.split(",") if r.strip()]:
        prof = get_profile(profiles, name)
        chosen[prof.name] = prof
    return chosen


def run(args) -> int:
    from sarft_core.store import write_table
    from sarft_core.traits import TRAITS, rate_traits

    out = Path(args.out)
    from sarft_core.cli._args import check_output

    check_output(out, {"--profiles": args.profiles, "--csv": args.csv}, types=(".csv", ".jsonl", ".parquet"))  # before any rating
    profiles = select_profiles(args.profiles, args.roles)
    options = {}
    if args.source == "openai":
        options = dict(model=args.rater_model, base_url=args.base_url, api_key_env=args.api_key_env, use_cache=not args.no_cache)
    print(f"rating {len(profiles)} roles with the {args.source} source ...", file=sys.stderr)
    table = rate_traits(profiles, source=args.source, csv=args.csv, **options)
    write_table(table, out)
    shown = [t for t in TRAITS if t in table.columns]
    top = table.sort_values(shown[0], ascending=False).head(5) if shown else table.head(5)
    print(top.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print(f"{len(table)} roles -> {out}")
    return 0
