"""The selection experiment's causal test, from a finished (or partly finished) grid, into the
shipped measurement the Overview and the Scoring page read (data/flag_validation.json, "causal").

Prints every paired contrast of the selection arms the grid holds (two-level bootstrap 95%
intervals, paired by character and seed) and the cost of its cells, and records the contrasts on
held-out AdvBench refusal, the refusal margin, XSTest unsafe refusal and the jailbreaks.

    python bench/selection_summary.py workspace/runs/selection [--json data/flag_validation.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEPT = ("advbench", "margin", "xstest_unsafe", "jailbreak")


def main(argv=None) -> int:
    from sarft_core.reproduce import Grid, ReproduceConfig, load_results, selection_contrasts, selection_lines
    from sarft_core.store import read_json_object

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("grid", help="a reproduce grid folder with selection arms")
    ap.add_argument("--json", default=None, help="merge the causal block into this file (data/flag_validation.json)")
    ap.add_argument("--boot", type=int, default=4000)
    args = ap.parse_args(argv)

    path = Path(args.grid)
    stored = read_json_object(path / "config.json")
    names = set(ReproduceConfig.__dataclass_fields__)
    cfg = ReproduceConfig(**{k: v for k, v in stored.items() if k in names})
    results = load_results(Grid(path, cfg, fingerprint=stored.get("model_fingerprint")))
    contrasts = selection_contrasts(results, cfg.methods, n_boot=args.boot)
    print(f"{len(results)} finished cells in {path}; F = {cfg.selection_fraction:g}, seeds {cfg.seeds}")
    print("\n".join(selection_lines(contrasts, cfg.selection_fraction)))
    arms = [r for r in results if r["method"] in cfg.methods and r["role"] is not None and r.get("train_seconds")]
    if arms:
        train = [r["train_seconds"] for r in arms]
        evals = [r["eval_seconds"] for r in arms if r.get("eval_seconds")]
        print(f"cost per cell: training median {statistics.median(train):.0f} s (max {max(train):.0f}), "
              f"evaluation median {statistics.median(evals):.0f} s, over {len(arms)} trained cells")
    if args.json:
        out = Path(args.json)
        data = json.loads(out.read_text()) if out.is_file() else {}
        data["causal"] = {"grid": str(path), "date": time.strftime("%Y-%m-%d"), "model": cfg.model,
                          "model_fingerprint": stored.get("model_fingerprint"), "fraction": cfg.selection_fraction, "seeds": cfg.seeds,
                          "characters": cfg.roles,
                          "contrasts": {k: v for k, v in contrasts.items() if k.rsplit("/", 1)[1] in KEPT}}
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote the causal block into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
