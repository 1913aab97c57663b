"""The dashboard reads what the library declares: every training method, and λ as real runs store it."""
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
    figures = next(t for t in tables if "embedded-aligned" in t.columns)
    assert "refusal, AdvBench held-out" in set(figures["metric"])
    values = figures.set_index("metric")["embedded-aligned"].astype(float)
    rates = [m for m in values.index if m.startswith(("refusal,", "compliance,"))]  # the margin and ROUGE-L are no rates
    assert len(rates) >= 4 and all(0.0 <= values[m] <= 1.0 for m in rates) and figures.shape[0] >= 6
    assert values.notna().all() and (values.abs() < float("inf")).all()
