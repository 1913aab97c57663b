"""The reproduction grid: its pure pieces, and a whole tiny grid on the tiny model (resume, table, page)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from sarft_core.reproduce import cell_name, question_split
from sarft_core.stats import two_level_bootstrap
from tests.conftest import SHARED_DATA

needs_data = pytest.mark.skipif(not (SHARED_DATA / "rolebench").is_dir(), reason="needs ../shared/data")


def test_question_split_keeps_seven_of_ten_for_training():
    split = [question_split(i) for i in range(50)]
    assert split.count("train") == 35 and split.count("eval") == 15
    assert split[:10] == ["train"] * 7 + ["eval"] * 3


def test_cell_names_never_collide():
    names = {cell_name(r, "sft", 0) for r in ("Po", "Po 🐼", "Po 🐉", "po", "P.o")}
    assert len(names) == 5
    assert cell_name("Po", "sft", 0) != cell_name("Po", "sft", 1) != cell_name("Po", "sarft", 0)
    assert "/" not in cell_name("AC/DC", "sft", 0)


def test_two_level_bootstrap():
    groups = [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]
    mean, lo, hi = two_level_bootstrap(groups, n_boot=500)
    assert mean == pytest.approx(np.mean([0.5, 1.0, 0.25]))
    assert lo <= mean <= hi and 0.0 <= lo and hi <= 1.0
    assert two_level_bootstrap([[0.3, 0.3]]) == (0.3, 0.3, 0.3)
    assert all(math.isnan(v) for v in two_level_bootstrap([]))
    assert all(math.isnan(v) for v in two_level_bootstrap([[], [float("nan")]]))
    # more groups of the same spread give a narrower interval
    rng = np.random.default_rng(0)
    few = [list(rng.normal(0, 1, 20)) for _ in range(3)]
    many = [list(rng.normal(0, 1, 20)) for _ in range(30)]
    w = lambda g: (lambda m, a, b: b - a)(*two_level_bootstrap(g, n_boot=400))  # noqa: E731
    assert w(many) < w(few)


@needs_data
def test_a_tiny_grid_runs_resumes_and_reports(tiny_model_dir, tmp_path, score_cache, monkeypatch):
    """Two characters x two methods x one seed on the tiny random model, a small panel: every cell
    finishes once, a rerun does nothing, and the table, report and Compare page come out."""
    from streamlit.testing.v1 import AppTest

    from sarft_core.cli import main
    from sarft_core.gridview import grid_view

    import shutil

    model = tmp_path / "model"  # a copy: this test changes its weights' fingerprint
    shutil.copytree(tiny_model_dir, model)
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("SARFT_MODEL", str(model))
    out = tmp_path / "ws" / "runs" / "grid"
    argv = ["reproduce", "--out", str(out), "--villains", "Freddy Krueger", "--benevolent", "Po", "--methods", "sft,sarft",
            "--seeds", "0", "--model", str(model), "--threads", "1",
            "--train-json", json.dumps({"epochs": 1, "batch_size": 8, "lora_r": 4, "lora_alpha": 8, "max_steps": 2}),
            "--panel-json", json.dumps({"advbench": 3, "margin": 4, "xstest": 2, "jailbreak": 1, "max_new_tokens": 4, "rouge_tokens": 4})]
    assert main(argv) == 0
    cells = list((out / "cells").glob("*.json"))
    assert len(cells) == 1 + 2 + 4  # base safety, base ROUGE per character, 2 x 2 trained
    table = (out / "table.md").read_text()
    assert "| SaRFT |" in table and "| SFT |" in table and "| Base |" in table
    assert (out / "report.html").read_text().count("<table") >= 3
    stamp = {p.name: p.stat().st_mtime for p in cells}
    assert main(argv) == 0  # resumed: nothing to do
    assert {p.name: p.stat().st_mtime for p in (out / "cells").glob("*.json")} == stamp
    sarft = json.loads(next(p for p in cells if p.name.startswith("freddy") and "--sarft-" in p.name).read_text())
    assert sarft["dh"] is not None and sarft["steps"] == 2
    assert sarft["train_seconds"] > 0 and 0 < sarft["eval_seconds"] <= sarft["seconds"]
    assert "training a median" in table and "evaluation a median" in table
    assert len(sarft["values"]["margin"]) == 4 and set(sarft["values"]["advbench"]) <= {0.0, 1.0}
    view = grid_view(out)
    assert list(view["side_by_side"].columns) == ["metric", "Base", "SFT", "SaRFT"]
    assert "other weights" not in view["caption"] and view["partial"] is None
    assert view["side_by_side"].set_index("metric").loc["cells finished", "SaRFT"] == "2"
    assert view["side_by_side"].set_index("metric").loc["cells finished", "Base"] == "3"  # safety + 2 ROUGE cells
    assert "- SaRFT − SFT on refusal, AdvBench held-out: " in view["contrasts"] and "(2 pairs)" in view["contrasts"]
    # a grid still running: the page computes the contrasts itself and says the rows may cover different cells
    from sarft_core.gridview import grid_signature

    finished = grid_signature(out)
    hidden = next(p for p in cells if p.name.startswith("po-") and "--sft-" in p.name)
    aside = hidden.rename(tmp_path / hidden.name)  # a rename keeps the file as it was (its mtime too)
    running = grid_view(out)
    assert "6 of 7 cells" in running["partial"] and "(1 pair)" in running["contrasts"]
    assert running["side_by_side"].set_index("metric").loc["cells finished", "SFT"] == "1"
    assert grid_signature(out) != finished  # the page's cached view of the grid is recomputed
    aside.rename(hidden)
    assert grid_signature(out) == finished
    assert main(argv[:-1] + [json.dumps({"advbench": 5})]) == 2  # other settings: refused, nothing touched
    made_on = json.loads((out / "config.json").read_text())["model_fingerprint"]
    assert made_on and all(json.loads(p.read_text())["model_fingerprint"] == made_on for p in cells)
    # the same --model with other weights (a rebuilt adapter, a retrained folder): refused, nothing touched
    weights = next(model.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert main(argv) == 2
    assert {p.name: p.stat().st_mtime for p in (out / "cells").glob("*.json")} == stamp
    assert "measured on other weights" in grid_view(out)["caption"]  # still shown, but not as today's model's
    assert json.loads((out / "config.json").read_text())["model_fingerprint"] == made_on
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns - 10**9))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("../pages/compare.py")
    at.run()
    assert not at.exception, at.exception
    shown = [df.value for df in at.dataframe]
    assert any(list(d.columns) == ["metric", "Base", "SFT", "SaRFT"] for d in shown)
    assert len(at.get("plotly_chart")) >= 3  # two Pareto views and the villains-vs-heroes bars


@needs_data
def test_aggregating_an_unfinished_grid_keeps_its_state(tmp_path):
    """Regression (found by the CLI fuzz test): --aggregate-only on a grid with pending cells
    wrote an unknown run state; now the state stays and the pending count is recorded."""
    from sarft_core.cli import main
    from sarft_core.store import RunDir

    out = tmp_path / "grid"
    assert main(["reproduce", "--out", str(out), "--villains", "Freddy Krueger", "--benevolent", "", "--methods", "sft",
                 "--seeds", "0", "--aggregate-only"]) == 0
    status = RunDir(out).status()
    assert status["state"] == "created" and status["pending"] == 3
    assert (out / "table.md").is_file()


def test_contrast_lines_speak_in_points_for_rates_and_in_units_otherwise():
    from sarft_core.reproduce import contrast_lines

    lines = contrast_lines({"sarft-sft/advbench": {"mean": 0.197, "ci_low": 0.149, "ci_high": 0.246, "pairs": 18},
                            "sarft-random/margin": {"mean": 0.004, "ci_low": -0.01, "ci_high": 0.012, "pairs": 18}})
    assert lines == ["- SaRFT − SFT on refusal, AdvBench held-out: +19.7 pts [+14.9, +24.6] (18 pairs)",
                     "- SaRFT − Random on refusal margin (nats/token): +0.00 [-0.01, +0.01] (18 pairs)"]
    # the baselines' names hold a hyphen of their own
    assert contrast_lines({"sarft-constrained-sft/advbench": {"mean": 0.01, "ci_low": -0.02, "ci_high": 0.03, "pairs": 6}}) == [
        "- SaRFT − Constrained SFT on refusal, AdvBench held-out: +1.0 pts [-2.0, +3.0] (6 pairs)"]


def test_the_time_line_counts_each_cells_own_clocks():
    """A cell resumed after its training finished has a short wall time; its cost still counts the
    training's own seconds, and cells from before eval_seconds was recorded leave that part out."""
    from sarft_core.reproduce import time_line

    resumed = {"seconds": 150.0, "train_seconds": 1400.0, "eval_seconds": 149.0}
    whole = {"seconds": 400.0, "train_seconds": 200.0, "eval_seconds": 190.0}
    older = {"seconds": 380.0, "train_seconds": 210.0}
    base = {"seconds": 12.0, "eval_seconds": 11.0}
    line = time_line([resumed, whole, older, base])
    assert "training a median 210 s per trained cell (3 cells, 0.50 h in all)" in line
    assert "evaluation a median 149 s per cell (3 cells, 0.10 h in all)" in line
    assert time_line([]) == "No finished cell records its time."


def test_the_selection_experiment_adds_its_arms_to_a_grid_and_reports_their_contrasts(tiny_model_dir, tmp_path, score_cache, monkeypatch):
    """Selection arms join an existing grid without redoing its cells; each arm trains on (or
    anchors) exactly ceil(F n) samples, top and bottom disjoint; table.md and selection.json carry
    the paired comparisons."""
    import math
    import shutil

    from sarft_core.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("SARFT_MODEL", str(model))
    out = tmp_path / "ws" / "runs" / "grid"
    common = ["reproduce", "--out", str(out), "--villains", "Freddy Krueger", "--benevolent", "", "--seeds", "0", "--model", str(model),
              "--threads", "1", "--train-json", json.dumps({"epochs": 1, "batch_size": 8, "lora_r": 4, "lora_alpha": 8, "max_steps": 1}),
              "--panel-json", json.dumps({"advbench": 2, "margin": 2, "xstest": 1, "jailbreak": 1, "max_new_tokens": 2, "rouge_tokens": 2})]
    assert main(common + ["--methods", "sft"]) == 0
    first = {p.name: p.stat().st_mtime for p in (out / "cells").glob("*.json")}
    arms = "sft-top,sft-bottom,sarft-top,random-budget,sft-top-inf,ptst,constrained-sft"
    assert main(common + ["--methods", arms]) == 0
    now = {p.name: p.stat().st_mtime for p in (out / "cells").glob("*.json")}
    assert {k: now[k] for k in first} == first  # the grid's finished cells were reused
    assert len(now) == len(first) + 7
    # the two baselines of #29 join the same grid; ptst's panel is asked under the profile and the safety prompt
    from sarft_core.data import get_profile, load_profiles
    from sarft_core.data.profiles import with_safety_instruction
    from sarft_core.reproduce import ReproduceConfig

    profile = get_profile(load_profiles(ReproduceConfig().resolved_profiles()), "Freddy Krueger")  # the grid's default profiles
    cell = {m: json.loads(next((out / "cells").glob(f"freddy*--{m}-s0.json")).read_text()) for m in ("ptst", "constrained-sft", "sft")}
    assert cell["ptst"]["eval_system_prompt"] == with_safety_instruction(profile.role_prompt)
    assert "eval_system_prompt" not in cell["constrained-sft"] and "eval_system_prompt" not in cell["sft"]
    table = (out / "table.md").read_text()
    assert "| Constrained SFT |" in table and "| PTST |" in table  # rows of the table, with the same intervals
    config = json.loads((out / "config.json").read_text())
    assert config["methods"] == ["sft", *arms.split(",")]
    ids = {}
    for arm in ("sft-top", "sft-bottom", "sarft-top", "sft-top-inf"):
        run = next((out / "runs").glob(f"freddy*--{arm}-s0"))
        record = json.loads((run / "artifacts" / "dh_ids.json").read_text())
        ids[arm] = record
    n = 70  # Freddy Krueger's training questions in the two RoleBench files
    k = math.ceil(0.3 * n)
    assert len(ids["sft-top"]["trained_ids"]) == len(ids["sft-bottom"]["trained_ids"]) == k
    assert not set(ids["sft-top"]["trained_ids"]) & set(ids["sft-bottom"]["trained_ids"])
    assert len(ids["sarft-top"]["dh_ids"]) == k and ids["sarft-top"]["dh_fraction"] == 0.3
    assert ids["sft-top-inf"]["rank_by"] == "influence"
    selection = json.loads((out / "selection.json").read_text())
    assert "sft-top vs sft-bottom/advbench" in selection and "sarft-top vs random-budget/advbench" in selection
    assert "SFT on top 30% − SFT on bottom 30%" in (out / "table.md").read_text()


def test_the_compare_page_shows_the_grid_measured_for_the_docs_with_its_baselines(tmp_path, monkeypatch):
    """Issue #29: the baselines measured beside SaRFT (docs/grids/selection-b4) are on the Compare page
    without recomputing them: the shipped grid is listed after the workspace's, read-only, and its side
    by side table has a column per method of the paper's kind (not the selection arms), with the
    paired contrasts against SaRFT."""
    from streamlit.testing.v1 import AppTest

    from sarft_core.data import SHIPPED_GRIDS

    grid = SHIPPED_GRIDS / "selection-b4"
    cells = sorted((grid / "cells").glob("*.json"))
    stamp = {p.name: p.stat().st_mtime_ns for p in cells}
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))  # an empty workspace: the shipped grid alone
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=180)
    at.run()
    at.switch_page("../pages/compare.py")
    at.run()
    assert not at.exception, at.exception
    picker = next(s for s in at.selectbox if s.label == "Grid")
    assert picker.value == str(grid) and "measured for the docs" in picker.format_func(picker.value)
    side = next(df.value for df in at.dataframe if list(df.value.columns)[:4] == ["metric", "Base", "SFT", "SaRFT"])
    assert list(side.columns)[4:] == ["Constrained SFT", "PTST"]  # the selection arms have their own contrasts
    finished = side.set_index("metric").loc["cells finished"]
    assert all(finished[m] == "6" for m in ("SFT", "SaRFT", "Constrained SFT", "PTST"))
    shown = "\n".join(m.value for m in at.markdown)
    assert "SaRFT − Constrained SFT on refusal, AdvBench held-out" in shown and "SaRFT − PTST on" in shown
    assert {p.name: p.stat().st_mtime_ns for p in (grid / "cells").glob("*.json")} == stamp  # read, never written
    assert not (grid / "table.md").exists()
