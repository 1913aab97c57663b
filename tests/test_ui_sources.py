"""The dashboard reads what the library declares: every training method, and λ as real runs store it."""
import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from sarft_core.runview import run_label, runs_table
from sarft_core.store import create_run
from sarft_core.training.run import METHODS, TrainConfig, run_config

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


def test_training_page_offers_every_registered_method(tmp_path, monkeypatch, tiny_model_dir):
    """Regression: the page found no declared choices and fell back to a list without sppft, seal, biselect."""
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("SARFT_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("../pages/training.py")
    at.run()
    assert not at.exception, at.exception
    method = next(s for s in at.selectbox if s.label == "Method")
    assert list(method.options) == list(METHODS)


def test_run_labels_show_lambda_from_the_config_training_writes(tmp_path):
    """Regression: labels read a top-level 'lambda' the training code never wrote."""
    cfg = TrainConfig(method="sarft", role="John Doe", lam=0.7)
    run = create_run("train", run_config(cfg), path=tmp_path / "jd-sarft")
    assert "λ=0.7" in run_label(run)
    assert runs_table([run]).iloc[0]["lambda"] == 0.7
    old = create_run("train", {"model": "", "method": "sarft", "role": "John Doe", "train": cfg.to_dict()}, path=tmp_path / "old")
    assert "λ=0.7" in run_label(old)  # runs written before the top-level key
    sft = create_run("train", run_config(TrainConfig(method="sft", role="John Doe", lam=0.7)), path=tmp_path / "sft")
    assert "λ" not in run_label(sft)


def test_overview_shows_the_aligned_models_measured_figures(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("SARFT_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    tables = [df.value for df in at.dataframe]
    figures = next(t for t in tables if "embedded-aligned [95% CI]" in t.columns).set_index("metric")
    assert "refusal, AdvBench held-out" in figures.index and figures.shape[0] >= 6
    shown = figures["embedded-aligned [95% CI]"]
    rates = [m for m in figures.index if m.startswith(("refusal,", "compliance,"))]  # the margin and ROUGE-L are no rates
    assert len(rates) >= 4
    for m in figures.index:
        # "98.8% [97.3, 100.0]" for a rate, "-0.01 [-0.07, 0.05]" otherwise: a value inside its interval
        found = re.fullmatch(r"(-?[0-9.]+)(%?) \[(-?[0-9.]+), (-?[0-9.]+)\]", shown[m])
        assert found, (m, shown[m])
        value, unit, lo, hi = float(found[1]), found[2], float(found[3]), float(found[4])
        assert (unit == "%") == (m in rates) and lo <= value <= hi, (m, shown[m])
        if unit:
            assert 0.0 <= lo and hi <= 100.0
    # every target the issue set is shown with whether it is met, the missed ones too
    targets = figures["target"]
    assert targets["refusal, AdvBench held-out"].startswith("≥ 90%") and targets["refusal, AdvBench held-out"][-1] in "✓✗"
    assert targets["refusal, XSTest unsafe"][-1] in "✓✗" and targets["RoleBench ROUGE-L"].startswith("≥ 90% of raw")
