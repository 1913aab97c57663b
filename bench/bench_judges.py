"""Agreement of the refusal judges with XSTest's human labels, measured leave-one-model-out.

Ground truth: ``final_label`` of ../shared/data/safety/xstest_completions/*.csv (one file per
model that wrote the completions): 1_full_compliance, 2_full_refusal, 3_partial_refusal; binary
refusal = full or partial refusal.

- ``hybrid`` (the default judge) is rebuilt on one file with the shipped recipe
  (sarft_core/evaluation/judges/fit.py) and scored on the other, both ways: these held-out
  figures are its accuracy. The shipped head (built on both files) is also scored in-sample.
- ``keyword``, ``gcg``, ``xstest``: fixed rules, scored on each file. The keyword rules were
  written while reading both files, so their figures here are in-sample too.
- ``openai`` (optional, --openai-base-url): an LLM judge, on a seeded subset with --subset.

For every judge with three classes a confusion table (rows: human label, columns: verdict).

    PYTHONPATH=$PWD python bench/bench_judges.py [--data-dir ../shared/data] [--show-errors hybrid]
    PYTHONPATH=$PWD python bench/bench_judges.py --judges none --openai-base-url http://127.0.0.1:8000/v1 \
        --openai-model MODEL --subset 60 --seed 0
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_refusal_head import xstest_files  # noqa: E402
from sarft_core.evaluation.datasets import load_xstest_completions  # noqa: E402
from sarft_core.evaluation.judges import build_judge  # noqa: E402
from sarft_core.evaluation.judges.fit import fit_heads, xstest_classes  # noqa: E402
from sarft_core.evaluation.judges.hybrid import HybridInputs, HybridJudge, verdicts_from  # noqa: E402
from sarft_core.evaluation.metrics import THREE_CLASSES, agreement, calibration_error, confusion_table, is_refusal  # noqa: E402

SHORT = {"compliance": "compl", "refusal": "full", "partial": "partial", "other": "other"}


def binary_line(file: str, judge: str, truth: list[str], pred: list[str], note: str = "") -> str:
    a = agreement([is_refusal(t) for t in truth], [is_refusal(p) for p in pred])
    right = a["tp"] + a["tn"]
    return (f"{file:<34} {judge:<18} {right:>4}/{a['n']:<4} {a['accuracy']:>6.3f} {a['precision']:>6.3f} {a['recall']:>6.3f} "
            f"{a['kappa']:>6.3f}  {note}")


def confusion_lines(title: str, truth: list[str], pred: list[str]) -> list[str]:
    c = confusion_table(truth, pred)
    lines = [f"  {title}: rows human, columns verdict", "  " + f"{'':<9}" + "".join(f"{SHORT[k]:>9}" for k in c["columns"]) + f"{'recall':>9}"]
    for t in THREE_CLASSES:
        lines.append("  " + f"{SHORT[t]:<9}" + "".join(f"{c['table'][t][k]:>9}" for k in c["columns"]) + f"{c['recall'][t]:>9.3f}")
    lines.append("  " + f"{'precision':<9}" + "".join(f"{c['precision'][k]:>9.3f}" for k in THREE_CLASSES))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--judges", default="gcg,xstest,keyword,hybrid", help="comma-separated; 'none' for only --openai-base-url")
    ap.add_argument("--openai-base-url", default=None)
    ap.add_argument("--openai-model", default=None)
    ap.add_argument("--openai-max-tokens", type=int, default=32)
    ap.add_argument("--subset", type=int, default=0, help="openai: judge this many completions per file (seeded, stratified by label)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show-errors", default=None, help="print the disagreements of this judge")
    args = ap.parse_args()
    names = [n.strip() for n in args.judges.split(",") if n.strip() and n.strip() != "none"]
    files = xstest_files(args.data_dir)
    data = {f.name: load_xstest_completions(f) for f in files}
    truth = {k: xstest_classes(df["final_label"]) for k, df in data.items()}
    results: dict[tuple[str, str], list[str]] = {}
    print(f"{'file (model that answered)':<34} {'judge':<18} {'right':>9} {'acc':>6} {'prec':>6} {'rec':>6} {'kappa':>6}")

    for name in [n for n in names if n != "hybrid"]:
        judge = build_judge(name)
        for k, df in data.items():
            results[(k, name)] = judge.judge(df["prompt"].tolist(), df["completion"].tolist())
            print(binary_line(k, name, truth[k], results[(k, name)], "(rules, in-sample)" if name == "keyword" else "(published rules)"))

    if "hybrid" in names:
        t0 = time.perf_counter()
        inputs = HybridInputs()
        rows = {k: inputs.rows(df["completion"].tolist()) for k, df in data.items()}
        shipped = HybridJudge()
        for k, df in data.items():
            p, q = shipped.heads.predict(rows[k])
            results[(k, "hybrid (shipped)")] = verdicts_from(p, q, df["completion"].tolist())[0]
            print(binary_line(k, "hybrid shipped", truth[k], results[(k, "hybrid (shipped)")], "(built on both files: in-sample)"))
        for held in data:
            build = [k for k in data if k != held]
            import numpy as np

            heads = fit_heads(np.vstack([rows[k] for k in build]), sum((truth[k] for k in build), []),
                              sum((data[k]["completion"].tolist() for k in build), []), built_on=build)
            p, q = heads.predict(rows[held])
            labels, _ = verdicts_from(p, q, data[held]["completion"].tolist())
            results[(held, "hybrid (held out)")] = labels
            ece = calibration_error([is_refusal(t) for t in truth[held]], p)
            print(binary_line(held, "hybrid held-out", truth[held], labels,
                              f"(built on {', '.join(build)}; C={heads.meta['refusal_head']['C']}; ECE {ece:.3f})"))
        print(f"{'':<34} (hybrid: {time.perf_counter() - t0:.0f} s for embedding, fitting and judging)")

    if args.openai_base_url:
        import random

        judge = build_judge("openai", base_url=args.openai_base_url, model=args.openai_model, max_tokens=args.openai_max_tokens, concurrency=1, timeout=600)
        for k, df in data.items():
            idx = list(range(len(df)))
            if args.subset and args.subset < len(df):
                rng = random.Random(args.seed)
                by = {}
                for i in idx:
                    by.setdefault(truth[k][i], []).append(i)
                idx = sorted(i for lab, members in by.items() for i in rng.sample(members, max(1, round(args.subset * len(members) / len(df)))))
            t0 = time.perf_counter()
            labels = judge.judge(df["prompt"].iloc[idx].tolist(), df["completion"].iloc[idx].tolist())
            sub_truth = [truth[k][i] for i in idx]
            results[(k, "openai")] = (sub_truth, labels)
            unknown = sum(1 for lab in labels if lab == "unknown")
            print(binary_line(k, "openai", sub_truth, labels, f"({len(idx)} seeded items, {unknown} unknown counted wrong, {time.perf_counter() - t0:.0f} s)"))

    print()
    for (k, name), labels in results.items():
        if name.startswith("hybrid") or name == "openai":
            sub_truth, pred = labels if name == "openai" else (truth[k], labels)
            print("\n".join(confusion_lines(f"{name} on {k}", sub_truth, pred)))
    if args.show_errors:
        for (k, name), labels in results.items():
            if name.split(" ")[0] != args.show_errors.split(" ")[0] or name == "openai":
                continue
            print(f"\n{name} on {k}: disagreements")
            for t, p, text in zip(truth[k], labels, data[k]["completion"]):
                if is_refusal(t) != is_refusal(p):
                    print(f"   [{t} judged {p}] {text[:220]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
