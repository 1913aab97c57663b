"""Judge options shared by `eval` and `judge` (a private helper module: not a command).

The judge names come from the registry (sarft_core.evaluation.judges): ``--judge`` accepts any
comma-separated combination of registered judges, and its choices are what the dashboard lists.
Numeric options are checked against the ranges of sarft_core.evaluation.judges.openai_judge.RANGES
when parsed: a value out of range is refused with the allowed range, never clamped.
"""
from __future__ import annotations

import argparse
import os

from sarft_core.errors import SarftError
from sarft_core.evaluation.judges import DEFAULT_JUDGE, JudgeChoices, build_judge, judge_names


def _setting(name: str, integer: bool):
    """An argparse ``type`` that checks one numeric judge setting against its allowed range."""
    from sarft_core.evaluation.judges.openai_judge import allowed_range, check_setting

    def parse(text: str):
        try:
            return check_setting(name, text, integer=integer)
        except SarftError:
            raise argparse.ArgumentTypeError(f"got {text!r}; it must be {allowed_range(name, integer)}") from None

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def add_judge_args(parser: argparse.ArgumentParser, default: str = DEFAULT_JUDGE) -> None:
    g = parser.add_argument_group("judge")
    g.add_argument("--judge", default=default, choices=JudgeChoices(), metavar="NAME[,NAME...]",
                   help=f"comma-separated judges, from the registry: {', '.join(judge_names())}")
    g.add_argument("--judge-base-url", default=os.environ.get("SARFT_JUDGE_BASE_URL"), help="openai judge: OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: $SARFT_JUDGE_BASE_URL, $OPENAI_BASE_URL or api.openai.com)")
    g.add_argument("--judge-model", default=os.environ.get("SARFT_JUDGE_MODEL"), help="openai judge: model name (default gpt-4o-mini)")
    g.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="openai judge: NAME of the environment variable holding the key (the key itself is never a flag)")
    g.add_argument("--judge-concurrency", type=_setting("concurrency", True), default=4, help="openai judge: requests in flight (1-64)")
    g.add_argument("--judge-retries", type=_setting("max_retries", True), default=3, help="openai judge: retries per request, the openai client's exponential backoff (0-10)")
    g.add_argument("--judge-timeout", type=_setting("timeout", False), default=60.0, help="openai judge: seconds per request (above 0, up to 3600)")
    g.add_argument("--judge-max-tokens", type=_setting("max_tokens", True), default=256, help="openai judge: reply length limit (1-32768)")
    g.add_argument("--classifier", default=None, help="classifier judge: Hugging Face text-classification model directory")
    g.add_argument("--classifier-labels", default=None, help="classifier judge: label mapping, e.g. LABEL_0=compliance,LABEL_1=refusal")
    g.add_argument("--classifier-pair", action="store_true", help="classifier judge: read (prompt, response) pairs instead of responses alone")


def build_judges(args) -> list:
    names = [n.strip().lower() for n in args.judge.split(",") if n.strip()]
    options = dict(
        base_url=args.judge_base_url, model=args.judge_model, api_key_env=args.judge_api_key_env,
        concurrency=args.judge_concurrency, max_retries=args.judge_retries, timeout=args.judge_timeout,
        max_tokens=args.judge_max_tokens, classifier_path=args.classifier,
        classifier_labels=args.classifier_labels, classifier_pair=args.classifier_pair,
        device=getattr(args, "device", "auto"),
    )
    return [build_judge(name, **options) for name in dict.fromkeys(names)]


def tqdm_progress(desc: str, total: int, run_path=None):
    """A progress callback drawing a tqdm bar on stderr, closed when it reaches the total, that
    also reports structured progress (``store.Progress``: the run's and the job's progress.json)."""
    import sys

    from tqdm import tqdm

    from sarft_core.store import Progress

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
    report = Progress(run_path, unit="item", phase=desc)

    def update(done: int, _total: int) -> None:
        report(done, total)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update
