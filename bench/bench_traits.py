"""How well do trait raters separate RoleBench villains from benevolent characters, and rank the rest?

Prints, for the malevolence trait of each rater, the AUC villains-vs-benevolent (the headline),
villains-vs-in-between and in-between-vs-benevolent (does it place the grey characters between the
two groups?), the group means, and the time taken. Raters: the ten-word lexicon baseline, the
pole-contrast embedding rater (sentence-level), the same rater on the whole profile at once, and
the learned scale shipped as the default malevolence (sarft_core/trait_model.py). Labels:
sarft_core/trait_labels.py. Also the Spearman rank correlation of each rater's malevolence with
the 1-5 ordinal labels of all 95 characters (``MALEVOLENCE``), with a 95% bootstrap interval over
characters. Only the learned scale is fitted to those labels, and it is cross-fitted: every
labelled character is rated by the fold models that did not see its label. ``--refits N`` rebuilds it
N times with other fold assignments and prints the spread (the recipe's figure rather than one build's).

    PYTHONPATH=$PWD python bench/bench_traits.py [--profiles ../shared/data/profiles/role_descriptions.json] [--list] [--refits 6]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from sarft_core.data import load_profiles
from sarft_core.data.names import normalise_name
from sarft_core.stats import bootstrap_ci, spearman_rho
from sarft_core.trait_labels import BENEVOLENT, IN_BETWEEN, MALEVOLENCE, VILLAINS
from sarft_core.traits import TRAITS, contrast, default_rater, lexicon_malevolence, profile_text, rate_default, roc_auc

ROOT = Path(__file__).resolve().parents[1]


def ordinal_agreement(scores: dict[str, float]) -> tuple[float, float, float, int]:
    """Spearman of the scores with MALEVOLENCE over the labelled roles present, its 95% CI, n."""
    labels = {normalise_name(k): v for k, v in MALEVOLENCE.items()}
    pairs = [(s, labels[normalise_name(r)]) for r, s in scores.items() if normalise_name(r) in labels]
    x, y = [p[0] for p in pairs], [float(p[1]) for p in pairs]
    lo, hi = bootstrap_ci((x, y), "spearman", level=0.95, n_boot=2000, seed=0)
    return spearman_rho(x, y), lo, hi, len(pairs)


def report(name: str, scores: dict[str, float], seconds: float) -> None:
    v, g, b = ([scores[r] for r in group] for group in (VILLAINS, IN_BETWEEN, BENEVOLENT))
    rho, lo, hi, n = ordinal_agreement(scores)
    print(
        f"{name:<28} AUC villain>benevolent {roc_auc(v, b):.3f}   villain>in-between {roc_auc(v, g):.3f}   "
        f"in-between>benevolent {roc_auc(g, b):.3f}   means V/G/B {statistics.mean(v):.3f}/{statistics.mean(g):.3f}/{statistics.mean(b):.3f}   "
        f"Spearman vs 1-5 labels {rho:.3f} [{lo:.3f}, {hi:.3f}] (n={n})   {seconds:.1f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default=str(ROOT.parent / "shared" / "data" / "profiles" / "role_descriptions.json"))
    ap.add_argument("--list", action="store_true", help="also print every role's default traits, most malevolent first")
    ap.add_argument("--refits", type=int, default=6, help="refit the learned scale this many times with other fold assignments (0: skip; needs scikit-learn)")
    args = ap.parse_args()
    profiles = load_profiles(args.profiles)
    print(f"{len(profiles)} profiles; labelled: {len(VILLAINS)} villains, {len(BENEVOLENT)} benevolent, {len(IN_BETWEEN)} in-between")

    t = time.perf_counter()
    lex = {n: lexicon_malevolence(profile_text(p)) for n, p in profiles.items()}
    report("lexicon (10 words)", lex, time.perf_counter() - t)

    t = time.perf_counter()
    rater = default_rater()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    table = rate_default(profiles, rater=rater, malevolence="poles")
    report("poles (per sentence)", dict(zip(table["role"], table["malevolence"])), time.perf_counter() - t)
    print(f"{'':<28} (model load {load_s:.1f} s, {len(profiles) / max(1e-9, time.perf_counter() - t):.1f} profiles/s)")

    # the learned scale as shipped: every labelled character rated by the fold model that did not see its label
    from sarft_core.trait_model import REPEATS, FeatureReader, fit_model, profile_features, shipped_model

    t = time.perf_counter()
    names, features = profile_features(profiles, FeatureReader(rater=rater))
    shipped = dict(zip(names, shipped_model().predict(names, features)))
    report("learned (shipped, cross-fitted)", shipped, time.perf_counter() - t)
    if args.refits:
        # the recipe's figure, not one build's: refit with other fold assignments (needs scikit-learn)
        # group 0 is the shipped build's seeds
        rhos = [fit_model(names, features, MALEVOLENCE, seed=REPEATS * group)[0].meta["oof_spearman"] for group in range(1, args.refits + 1)]
        print(f"{'learned, refitted':<28} out-of-fold Spearman of {len(rhos)} other builds ({REPEATS} fold assignments each): "
              f"mean {statistics.mean(rhos):.3f}, min {min(rhos):.3f}, max {max(rhos):.3f}")

    from sarft_core.traits import TRAIT_DEFS

    t = time.perf_counter()
    high, low = rater.poles(TRAIT_DEFS["malevolence"])
    whole = {n: contrast(rater.embed([profile_text(p)]), high, low) for n, p in profiles.items()}
    report("embedding, whole profile", whole, time.perf_counter() - t)

    if args.list:
        print()
        print(table.sort_values("malevolence", ascending=False).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        print()
        print("trait correlations (Spearman) across roles:")
        print(table[list(TRAITS)].corr(method="spearman").round(2).to_string())


if __name__ == "__main__":
    main()
