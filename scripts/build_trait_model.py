"""Rebuild the learned malevolence scale (sarft_core/trait_model.json).

Rates the 95 RoleBench profiles (role_descriptions.json) with the recipe of
sarft_core/trait_model.py and fits it, cross-fitted (five fold assignments of five folds), on
trait_labels.MALEVOLENCE.
Needs scikit-learn (requirements-dev.txt); a few minutes on two CPU cores. Prints the out-of-fold
Spearman of the build (each labelled character rated by the models that did not see its label).

    PYTHONPATH=$PWD python scripts/build_trait_model.py [--profiles FILE] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sarft_core.data import load_profiles  # noqa: E402
from sarft_core.trait_labels import MALEVOLENCE  # noqa: E402
from sarft_core.trait_model import MODEL_FILE, fit_model, profile_features  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", default=str(ROOT.parent / "shared" / "data" / "profiles" / "role_descriptions.json"))
    ap.add_argument("--out", default=str(MODEL_FILE))
    args = ap.parse_args()
    t = time.perf_counter()
    names, X = profile_features(load_profiles(args.profiles))
    print(f"features of {len(names)} profiles: {X.shape[1]} each, {time.perf_counter() - t:.0f} s")
    model, _ = fit_model(names, X, MALEVOLENCE)
    Path(args.out).write_text(json.dumps(model.to_json()) + "\n")
    print(f"out-of-fold Spearman vs the 1-5 labels: {model.meta['oof_spearman']:.3f}; penalties {[round(a, 1) for a in model.meta['alphas']]}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
