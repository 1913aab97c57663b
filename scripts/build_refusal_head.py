"""Rebuild the hybrid judge's head (sarft_core/evaluation/judges/refusal_head.json).

Builds on XSTest's human-labelled completion files (../shared/data/safety/xstest_completions/),
all of them by default, with the recipe of sarft_core/evaluation/judges/fit.py. Needs
scikit-learn (requirements-dev.txt); about two minutes on two CPU cores.

    PYTHONPATH=$PWD python scripts/build_refusal_head.py [--data-dir ../shared/data] [--build-on gpt4] [--out FILE]

The leave-one-model-out accuracy of this recipe is measured by bench/bench_judges.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarft_core.evaluation.datasets import default_data_dir, load_xstest_completions  # noqa: E402
from sarft_core.evaluation.judges.fit import fit_heads, xstest_classes  # noqa: E402
from sarft_core.evaluation.judges.head import HEAD_FILE, save_heads  # noqa: E402
from sarft_core.evaluation.judges.hybrid import HybridInputs  # noqa: E402


def xstest_files(data_dir: str | Path | None, names: list[str] | None = None) -> list[Path]:
    folder = Path(data_dir or default_data_dir()) / "safety" / "xstest_completions"
    files = sorted(folder.glob("*.csv"))
    if names:
        files = [f for f in files if any(n in f.stem for n in names)]
    if not files:
        raise SystemExit(f"no XSTest completion files{' matching ' + ','.join(names) if names else ''} under {folder}")
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--build-on", default=None, help="comma-separated parts of file names to build on (default: all files)")
    ap.add_argument("--out", default=str(HEAD_FILE))
    args = ap.parse_args()
    files = xstest_files(args.data_dir, [n.strip() for n in args.build_on.split(",")] if args.build_on else None)
    inputs = HybridInputs()
    rows, classes, texts = [], [], []
    for f in files:
        df = load_xstest_completions(f)
        print(f"embedding {f.name} ({len(df)} completions) ...", file=sys.stderr)
        rows.extend(inputs.rows(df["completion"].tolist()).tolist())
        classes += xstest_classes(df["final_label"])
        texts += df["completion"].tolist()
    heads = fit_heads(rows, classes, texts, built_on=[f.name for f in files])
    save_heads(heads, args.out)
    r, p = heads.meta["refusal_head"], heads.meta["partial_head"]
    print(f"refusal head: C={r['C']}, grouped-CV accuracy {r['cv_accuracy']:.3f} on {r['n']} rows ({r['n_distinct']} distinct)")
    print(f"partial head: C={p['C']}, grouped-CV accuracy {p['cv_accuracy']:.3f} on {p['n']} refusals ({p['n_positive']} partial)")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
