"""Views of a reproduction grid (sarft_core.reproduce runs its cells): the files an aggregate writes
(table.csv, table.md, cells.csv, contrasts.json, selection.json, report.html) and what the Compare
page shows, both computed from the finished cells."""
from __future__ import annotations

from pathlib import Path

from sarft_core.errors import SarftError
from sarft_core.evaluation.metric_registry import format_measure
from sarft_core.plots import reproduce_report_html
from sarft_core.reproduce import (METHOD_LABELS, Grid, ReproduceConfig, column_info, contrast_lines, load_results, markdown_table,
                                  paired_contrasts, paper_methods, plan_cells, selection_contrasts, selection_lines, table, time_line)
from sarft_core.store import atomic_write_json, atomic_write_text, read_json_object


def aggregate(grid: Grid) -> dict:
    """table.csv, table.md, cells.csv and report.html from the finished cells."""
    import pandas as pd

    results = load_results(grid)
    df = table(results, grid.cfg)
    df.to_csv(grid.path / "table.csv", index=False)
    cells = pd.DataFrame([{"role": r["role"], "group": r["group"], "method": r["method"], "seed": r["seed"], **r["summary"],
                           "dh": r.get("dh"), "steps": r.get("steps"), "seconds": r["seconds"], "train_seconds": r.get("train_seconds"),
                           "eval_seconds": r.get("eval_seconds")} for r in results])
    cells.to_csv(grid.path / "cells.csv", index=False)
    contrasts = paired_contrasts(results, grid.cfg.methods)
    md = ["# SaRFT in miniature", "", f"{len(results)} of {len(plan_cells(grid.cfg))} cells finished.", ""]
    for group in ("all", "villain", "benevolent"):
        md += [f"## {group}", "", markdown_table(df, group, grid.cfg), ""]
    md += ["## SaRFT minus each other method, paired by character and seed (mean [95% CI])", ""]
    md += contrast_lines(contrasts)
    selection = selection_contrasts(results, grid.cfg.methods)
    if selection:
        md += ["", f"## The selection experiment: F = {100 * grid.cfg.selection_fraction:.0f}% of each character's samples, "
                   "paired by character and seed (mean [95% CI])", ""]
        md += selection_lines(selection, grid.cfg.selection_fraction)
    md += ["", "## Time", "", time_line(results)]
    text = "\n".join(md) + "\n"
    atomic_write_text(grid.path / "table.md", text)
    atomic_write_json(grid.path / "contrasts.json", contrasts)
    atomic_write_json(grid.path / "selection.json", selection)
    atomic_write_text(grid.path / "report.html", reproduce_report_html(df, cells, contrasts, grid.cfg.methods))
    return {"table": df, "cells": cells, "contrasts": contrasts, "selection": selection, "markdown": text}


def grid_signature(path: Path) -> tuple:
    """What :func:`grid_view`'s result depends on: the grid's config and finished cells (name,
    modification time and size of each) and today's fingerprint of its model (for the caption), so
    a cached view is reused only while none of them has changed."""
    path = Path(path)
    files = [path / "config.json", *sorted((path / "cells").glob("*.json"))]
    stats = [(f.name, f.stat()) for f in files if f.is_file()]
    stamps = tuple((name, st.st_mtime_ns, st.st_size) for name, st in stats)
    cfg_data = read_json_object(path / "config.json")
    try:
        from sarft_core.models import model_fingerprint

        now = model_fingerprint((cfg_data.get("model") if isinstance(cfg_data, dict) else None) or None)
    except SarftError:
        now = None
    return str(path), stamps, now


def grid_view(path: Path) -> dict:
    """What the Compare page shows of a grid: the table, SFT vs SaRFT (and the grid's ablations and
    baselines) side by side, the contrasts."""
    import pandas as pd

    cfg_data = read_json_object(path / "config.json")
    if cfg_data is None:
        raise SarftError(f"{path / 'config.json'} is damaged (not a JSON object)",
                         "the grid's finished cells stay in cells/: rerun `python -m sarft_core reproduce` with its settings into a new --out")
    if cfg_data.get("kind") != "reproduce":
        raise SarftError(f"{path} is not a reproduce grid", "pick a folder made by `python -m sarft_core reproduce`")
    names = {f for f in ReproduceConfig.__dataclass_fields__}
    cfg = ReproduceConfig(**{k: v for k, v in cfg_data.items() if k in names})
    grid = Grid(path, cfg, fingerprint=cfg_data.get("model_fingerprint"))
    results = load_results(grid)
    if not results:
        raise SarftError(f"no finished cell in {path} yet", "wait for the grid, or run `python -m sarft_core reproduce --out ...`")
    df = table(results, cfg, n_boot=500)
    info = column_info(cfg)
    # Base, SFT and SaRFT, then the grid's ablations and baselines
    others = [METHOD_LABELS.get(m, m) for m in paper_methods(cfg.methods) if m not in ("sft", "sarft")]
    shown = {m: df[(df.group == "all") & (df.method == m)] for m in ("Base", "SFT", "SaRFT", *others)}
    side = [{"metric": i.title, **{m: "–" if r.empty else format_measure(r.iloc[0][metric], i.percent, r.iloc[0][metric + "_lo"], r.iloc[0][metric + "_hi"])
                                   for m, r in shown.items()}} for metric, i in info.items()]
    side.append({"metric": "cells finished", **{m: "–" if r.empty else str(int(r.iloc[0]["cells"])) for m, r in shown.items()}})
    # computed from the finished cells, like the table (a grid still running has no contrasts.json yet)
    lines = contrast_lines(paired_contrasts(results, cfg.methods, n_boot=500))
    chosen = selection_lines(selection_contrasts(results, cfg.methods, n_boot=500), cfg.selection_fraction)
    total = len(plan_cells(cfg))
    made_on = cfg_data.get("model_fingerprint")
    try:
        from sarft_core.models import model_fingerprint

        now = model_fingerprint(cfg.model or None)
    except SarftError:
        now = None
    partial = None
    if len(results) < total:
        partial = (f"The grid is not finished ({len(results)} of {total} cells): each method's row covers only the characters "
                   "and seeds it has finished (the 'cells finished' row), so rows may not compare like with like; the paired "
                   "contrasts below match character and seed.")
    model_note = f" · model {cfg.model or 'embedded default'}" + (
        f" (measured on other weights than today's {cfg.model!r}: {made_on})" if made_on and now and made_on != now else "")
    return {"table": df, "side_by_side": pd.DataFrame(side), "columns": {m: i.title for m, i in info.items()},
            "contrasts": "\n".join(lines) or "(the paired contrasts appear once SaRFT and another method have finished the same character and seed)",
            "partial": partial,
            "selection": ("**The selection experiment** (does RDS's ranking carry signal? paired by character and seed; "
                          "SFT on the top minus SFT on the bottom below zero means the top erodes more)\n\n" + "\n".join(chosen)) if chosen else "",
            "caption": f"{len(results)} of {total} cells finished · {len(cfg.roles)} characters · methods {', '.join(cfg.methods)} · seeds {cfg.seeds}"
                       + model_note}
