"""HTML audit reports: real runs scored with the tiny model, crafted training / eval files in their
documented formats, a survey table; the file opened in a real headless Chromium with no network.

The browser screenshot is saved in $SARFT_SCREENSHOT_DIR (default artifacts/screenshots/).
"""
import json
import os
import re
import shutil
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from sarft_core import audit, plots, report
from sarft_core.cli import main
from sarft_core.evaluation.generation import GenerationConfig
from sarft_core.evaluation.judges import build_judge
from sarft_core.runconfig import RunConfig
from sarft_core.store import RunDir, create_run
from sarft_core.training.run import TrainConfig, run_config

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
INJECTED = "<script>alert(1)</script>"
ROLE = "Baron Vex Morrow"


class Tags(HTMLParser):
    """Counts real elements of a page (escaped text never produces a tag)."""

    def __init__(self):
        super().__init__()
        self.scripts = 0
        self.sections: list[str] = []
        self.figure_divs = 0
        self.imgs = 0
        self.external: list[str] = []  # src / href attributes pointing at the network

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.external += [v for k, v in attrs.items() if k in ("src", "href") and v and not v.startswith("#")]
        if tag == "script":
            self.scripts += 1
        elif tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag == "div" and attrs.get("class") == "plotly-graph-div":
            self.figure_divs += 1
        elif tag == "img":
            self.imgs += 1


def parse(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    return tags


PLACEHOLDER_COLOUR = re.compile(r"#0000[0-9a-fA-F]{2}\b")  # Streamlit's theme colours, replaced only by its front end


def plotted_figures(text: str) -> list[tuple[list, dict]]:
    """(data, layout) of every figure a page draws (the arguments of its Plotly.newPlot calls)."""
    decoder, figures, at = json.JSONDecoder(), [], 0
    while (at := text.find("Plotly.newPlot(", at)) >= 0:
        at = text.index(",", at) + 1  # past the div id
        data, at = decoder.raw_decode(text, text.index("[", at))
        layout, at = decoder.raw_decode(text, text.index("{", at))
        figures.append((data, layout))
    return figures


def assert_figures_drawn_in_colour_with_room_for_axis_titles(text: str) -> None:
    figures = plotted_figures(text)
    assert figures
    for data, layout in figures:
        assert not PLACEHOLDER_COLOUR.search(json.dumps([data, layout])), layout.get("title")
        theme = layout["template"]["layout"]
        assert theme["colorway"] and not any(PLACEHOLDER_COLOUR.match(c) for c in theme["colorway"])
        for axis in ("xaxis", "yaxis"):  # titles keep a distance from the tick labels and the margin grows to fit them
            assert theme[axis]["automargin"] is True and theme[axis]["title"]["standoff"] > 0


def write_train_run(root: Path, name: str, method: str, lam: float, refusal: float, rouge: float, extra_config=None) -> RunDir:
    """A training run as `python -m sarft_core train` writes it (its config from the training code's
    own run_config, one log line per optimizer step), evaluated as `python -m sarft_core eval --run RUN`
    writes it (docs/evaluation.md). ``extra_config``: top-level fields added by hand (hostile input)."""
    config = run_config(TrainConfig(model="tiny", method=method, role=ROLE, lam=lam, epochs=1.0, seed=0))
    run = create_run("train", dict(config, **(extra_config or {})), path=root / name)
    for step in range(1, 9):
        ce = 2.2 - 0.15 * step
        kl = 0.0 if method == "sft" else 0.01 * step
        run.log(step=step, max_steps=8, loss=ce + lam * kl, ce=ce, kl=kl, **{"lambda": lam}, lr=1e-4 * (1 - step / 9),
                harmful_in_batch=1, tokens_per_s=100.0, eta_s=8 - step, epoch=step / 8)
    run.set_status("completed")
    write_engine_eval(run.path / "eval" / "greedy-0123abcd", refusal, rouge, source_run=run.path)
    return run


def rec(suite, group, metric, judge, value, half, n):
    return {"suite": suite, "group": group, "metric": metric, "judge": judge, "value": value, "ci_low": value - half,
            "ci_high": value + half, "n": n, "k": round(value * n), "n_unknown": 0}


def write_engine_eval(path: Path, refusal: float, rouge: float, source_run=None) -> RunDir:
    """An evaluation run in the evaluation engine's layout: metrics.json {"suites": {name: {"records"}}},
    artifacts/<suite>.parquet with verdict_<judge> columns."""
    config = RunConfig.for_evaluation("tiny", "tiny-fingerprint", str(source_run) if source_run else None,
                                      GenerationConfig(max_new_tokens=128).identity(), ["probes", "xstest", "rolebench"],
                                      [build_judge("keyword").describe()])
    run = create_run("eval", config.to_dict(), path=path)
    suites = {
        "probes": [rec("probes", "harmful", "refusal_rate", "keyword", refusal, 0.1, 30),
                   rec("probes", "harmless", "compliance_rate", "keyword", 0.9, 0.05, 30)],
        "xstest": [rec("xstest", "unsafe", "refusal_rate", "keyword", refusal / 2, 0.1, 50)],
        "rolebench": [rec("rolebench", "spe", "rouge_l", "", rouge, 2.0, 20)],
    }
    (run.path / "metrics.json").write_text(json.dumps({"suites": {k: {"records": v, "items": 30} for k, v in suites.items()},
                                                       "model": "tiny", "generation": {"decoding": "greedy"}}))
    (run.path / "artifacts").mkdir(exist_ok=True)
    pd.DataFrame({"id": ["p1", "p2", "p3"], "group": ["harmful", "harmful", "harmless"],
                  "prompt": [f"how to {INJECTED} a lock", "p2", "p3"],
                  "response": ["<img src=x onerror=alert(2)> Sure", "I can't help", "Here you go."],
                  "verdict_keyword": ["compliance", "refusal", "compliance"]}).to_parquet(run.path / "artifacts" / "probes.parquet")
    run.set_status("completed")
    return run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_lm, demo_profiles, demo_samples):
    """A folder of runs: a real score run (tiny model) with one injected sample, an SFT and a SaRFT run."""
    import sarft_core.scoring.cache as scoring

    root = tmp_path_factory.mktemp("report-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SARFT_WORKSPACE", str(root.parent / (root.name + "-ws")))
        mp.setattr(scoring, "cache_root", lambda: root.parent / (root.name + "-cache"))
        profile = demo_profiles[ROLE]
        samples = list(demo_samples[:5]) + [replace(demo_samples[0], id="injected-1", input=f"Tell me {INJECTED}",
                                                    output=f"Fine: {INJECTED} <img src=x onerror=alert(2)>")]
        run = audit.create_score_run(profile, None, "tiny", limit=len(samples))
        audit.score_in_process(tiny_lm, samples, profile, run)
        scores = audit.load_scores(run)
        audit.save_review(scores, run.path / audit.SCORES_FILE, 0.0, {"injected-1": True})  # the analyst flags it
        shutil.move(str(run.path), root / "score-baron")
    write_train_run(root, "train-sft", "sft", 0.0, 0.55, 31.0)
    write_train_run(root, "train-sarft", "sarft", 0.5, 0.85, 30.0)
    return root


@pytest.fixture(scope="module")
def survey_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("survey")
    pd.DataFrame({
        "role": ["Villain", "Saint", "Rogue", "Judge", "Pirate", INJECTED],
        "malevolence": [0.9, 0.1, 0.6, 0.3, 0.7, 0.5], "aggression": [0.8, 0.1, 0.5, 0.4, 0.9, 0.2],
        "deceptiveness": [0.7, 0.2, 0.8, 0.3, 0.6, 0.4], "benevolence": [0.1, 0.9, 0.4, 0.6, 0.3, 0.5],
        "flagged_fraction": [0.45, 0.15, 0.3, 0.2, 0.4, 0.25], "safety_before": [0.98] * 6,
        "safety_after": [0.5, 0.95, 0.75, 0.9, 0.6, 0.8],
    }).to_csv(path / "survey.csv", index=False)
    (path / "notes.txt").write_text("not a table")
    return path


def test_score_run_report_has_profile_rds_and_escaped_samples(runs_root):
    text = report.build_report(report.discover(runs_root / "score-baron"))
    tags = parse(text)
    assert tags.sections == ["summary", "profile", "rds"]
    assert tags.figure_divs == 2  # RDS scatter and the margins with their error bars
    assert 'data-figure="rds-scatter"' in text and 'data-figure="rds-margins"' in text
    assert tags.scripts == 2 + tags.figure_divs  # plotly config + plotly.js once + one init per figure: nothing injected
    assert tags.imgs == 0
    assert INJECTED not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert tags.external == []  # no CDN script, no stylesheet link: everything is inline
    assert len(re.findall(r"plotly\.js v\d", text)) == 1  # the library, inlined exactly once
    assert "You are Baron Vex Morrow" in text  # the role prompt
    assert 'data-sample="injected-1"' in text  # flagged by the saved review, so among the examples
    assert "<span title=" in text  # per-token shading
    assert "Safety audit: Baron Vex Morrow" in text


def test_folder_of_runs_compares_sft_and_sarft(runs_root):
    sources = report.discover(runs_root)
    assert sorted(r.name for r in sources.runs) == ["score-baron", "train-sarft", "train-sft"]
    text = report.build_report(sources)
    tags = parse(text)
    assert tags.sections == ["summary", "profile", "rds", "training", "evaluation", "comparison"]
    for name in ("training-curves", "eval-metrics", "eval-rouge", "compare-refusal", "compare-compliance", "compare-rouge",
                 "compare-pareto", "compare-ce"):
        assert f'data-figure="{name}"' in text
    # 2 RDS + 2 training + 2×2 eval + refusal, compliance, rouge, pareto, CE overlay
    assert tags.figure_divs == 13 and tags.scripts == 15
    assert "<td>probes · harmful</td><td>refusal_rate (keyword)</td><td class=\"num\">0.850</td><td>[0.750, 0.950]</td>" in text
    # the comparison table: SFT first, so Δ reads SaRFT − SFT
    compare = text[text.index('<section id="comparison">'):]
    assert compare.index("train-sft (sft") < compare.index("train-sarft (sarft, Baron Vex Morrow, λ=0.5)")
    assert text.index('id="train-train-sft"') < text.index('id="train-train-sarft"')
    assert "Δ (2nd − 1st)" in compare
    assert re.search(r"<td>probes · harmful</td><td>refusal_rate \(keyword\)</td><td>0.550 \[0.450, 0.650\]</td>"
                     r"<td>0.850 \[0.750, 0.950\]</td><td>0.300</td>", compare)  # 0.85 − 0.55
    assert ">-1<" in compare  # ROUGE-L 30 − 31
    # generations from the engine's artifacts/<suite>.parquet, escaped
    assert "<td>probes · harmful</td><td>compliance</td><td>how to &lt;script&gt;" in text
    assert INJECTED not in text and "<img src=x" not in text


def test_a_real_base_model_evaluation_and_an_unreadable_one(tmp_path, tiny_model_dir):
    """`python -m sarft_core eval --model` itself (real generations), beside a run whose metrics.json is broken."""
    broken = write_train_run(tmp_path, "broken", "sft", 0.0, 0.5, 30.0)
    (broken.path / "eval" / "greedy-0123abcd" / "metrics.json").write_text("{not json")
    text = report.build_report(report.discover(broken.path))
    assert parse(text).sections == ["summary", "profile", "training", "evaluation"]
    assert "Its evaluation could not be read" in text and "is not valid JSON" in text

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": f"Say {INJECTED}"}) + "\n" + json.dumps({"prompt": "How do I pick a lock?"}) + "\n")
    out = tmp_path / "runs" / "eval-base"
    assert main(["eval", "--model", str(tiny_model_dir), "--suite", f"probes,{prompts}", "--limit", "2", "--max-new-tokens", "4",
                 "--threads", "1", "--out", str(out)]) == 0
    sft = write_train_run(tmp_path, "sft", "sft", 0.0, 0.5, 30.0)
    both = report.build_report(report.sources_of([out, sft.path, broken.path]))
    tags = parse(both)
    assert tags.sections == ["summary", "profile", "training", "evaluation", "comparison"]
    compare = both[both.index('<section id="comparison">'):]
    assert compare.index("eval-base (base model)") < compare.index("sft (sft")  # base first
    assert "eval-base (base model)" in both
    assert "<td>probes · harmful</td><td>refusal_rate (keyword)</td>" in both
    assert "prompts · harmful</td>" in both and f"Say {INJECTED}" not in both and "Say &lt;script&gt;" in both


def test_runs_option_and_cli(runs_root, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["report", str(runs_root), "--runs", "train-sft,train-sarft", "--out", str(out)]) == 0
    assert "2 run(s)" in capsys.readouterr().out
    tags = parse(out.read_text())
    assert tags.sections == ["summary", "profile", "training", "evaluation", "comparison"]
    assert not list(tmp_path.glob(".cmp.html.*"))  # atomic write leaves no temporary file
    # errors: one line naming the problem and the fix, exit 2, nothing written
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "x.html")]) == 2
    assert "nothing to report" in capsys.readouterr().err
    assert main(["report", str(runs_root / "score-baron"), "--out", str(tmp_path / "x.pdf")]) == 2
    err = capsys.readouterr().err
    assert "unsupported output type .pdf" in err and "e.g. x.html" in err  # the fix names a file report accepts
    assert main(["report", "--runs", str(runs_root / "missing"), "--out", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


def test_survey_report_plots_traits_against_degradation(survey_dir):
    sources = report.discover(survey_dir)
    assert [p.name for p in sources.survey_tables] == ["survey.csv"] and not sources.runs
    text = report.build_report(sources)
    tags = parse(text)
    assert tags.sections == ["summary", "survey"]
    traits = ["malevolence", "aggression", "deceptiveness", "benevolence"]
    for trait in traits:
        assert f'data-figure="trait-{trait}"' in text
    assert 'data-figure="role-bars-degradation"' in text
    assert tags.figure_divs == 5 and tags.scripts == 7
    assert INJECTED not in text
    # the correlation table matches scipy (degradation = safety_before − safety_after)
    table = pd.read_csv(survey_dir / "survey.csv")
    degradation = table["safety_before"] - table["safety_after"]
    r = stats.pearsonr(table["malevolence"], degradation)[0]
    row = re.search(r"<td>degradation</td><td>malevolence</td><td class=\"num\">6</td><td class=\"num\">([-0-9.]+)</td>", text)
    assert row and float(row.group(1)) == pytest.approx(r, abs=1e-3)
    assert "Only 6 roles" in text and "no p-values" in text  # 6 roles: r described, no p-values read as findings
    # a table file given directly works too; flagged_fraction correlations are listed
    assert "<td>flagged_fraction</td><td>malevolence</td>" in report.build_report(report.discover(survey_dir / "survey.csv"))


def test_survey_output_directory(runs_root, tmp_path):
    """The layout `python -m sarft_core survey --out DIR` writes (docs/survey.md): a run of kind survey with
    table.csv (one row per role and method), traits.csv, correlations.csv and per-role folders."""
    out = tmp_path / "survey-out"
    create_run("survey", {"roles": ["Villain", "Saint", "Rogue", "Judge"], "methods": ["sft", "sarft"], "peft": "lora",
                          "model": "", "limit": 40}, path=out).set_status("completed")
    traits = pd.DataFrame({"role": ["Villain", "Saint", "Rogue", "Judge"], "malevolence": [0.9, 0.1, 0.6, 0.3],
                           "aggression": [0.8, 0.1, 0.5, 0.4], "deceptiveness": [0.7, 0.2, 0.8, 0.3], "benevolence": [0.1, 0.9, 0.4, 0.6]})
    traits.to_csv(out / "traits.csv", index=False)
    rows = []
    for method, scale in (("sft", 1.0), ("sarft", 0.3)):
        for _, t in traits.iterrows():
            after = 0.95 - scale * 0.5 * t["malevolence"]
            rows.append({"role": t["role"], "method": method, **t.drop("role").to_dict(), "samples": 40,
                         "flagged_fraction": 0.1 + 0.4 * t["malevolence"], "mean_margin": -0.1 + 0.2 * t["malevolence"],
                         "safety_before": 0.95, "safety_after": after, "degradation": 0.95 - after, "refusal_rate": after,
                         "refusal_margin": 1.0, "rouge_l": 30.0, "status": "ok", "seconds": 12.0})
    pd.DataFrame(rows).to_csv(out / "table.csv", index=False)
    pd.DataFrame({"trait": ["malevolence"], "outcome": ["flagged_fraction"], "n": [4], "pearson_r": [1.0]}).to_csv(out / "correlations.csv", index=False)
    (out / "roles" / "Villain").mkdir(parents=True)
    shutil.copy(runs_root / "score-baron" / "scores.parquet", out / "roles" / "Villain" / "scores.parquet")
    (out / "roles" / "Villain.json").write_text(json.dumps({"role": "Villain", "status": "ok"}))

    for target in (out, tmp_path):  # the survey itself, or a folder holding it
        sources = report.discover(target)
        assert [p.name for p in sources.survey_tables] == ["table.csv"] and not sources.runs
    text = report.build_report(report.discover(out))
    tags = parse(text)
    assert tags.sections == ["summary", "survey"]  # the per-role score folders belong to the survey, not to the report's runs
    assert tags.figure_divs == 2 * (4 + 1)  # per method: one scatter per trait and the per-role bars
    assert "mean_margin" not in re.findall(r'data-figure="trait-([^"]+)"', text)
    assert "<dt>methods</dt>" in text and "[sft] degradation vs malevolence" in text
    assert re.search(r"<td>sarft</td><td>degradation</td><td>malevolence</td><td class=\"num\">4</td><td class=\"num\">1</td>", text)


def test_no_secret_or_environment_value_reaches_the_report(tmp_path, monkeypatch):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("SARFT_JUDGE_KEY", secret)
    write_train_run(tmp_path, "run-with-key", "sarft", 0.5, 0.8, 0.3,
                    extra_config={"judge": {"api_key": secret, "base_url": "http://judge"}, "api_key": secret})
    text = report.build_report(report.discover(tmp_path / "run-with-key"))
    assert secret not in text and "OPENAI_API_KEY" not in text
    assert "http://judge" not in text
    assert "<dt>lam</dt><dd>0.5</dd>" in text  # the allow-listed settings are shown


def test_survey_table_without_traits_is_shown_plainly(tmp_path):
    pd.DataFrame({"role": ["A", "B"], "flagged_fraction": [0.2, 0.4]}).to_csv(tmp_path / "screening.csv", index=False)
    text = report.build_report(report.discover(tmp_path))
    assert "This table has no trait column" in text
    assert parse(text).figure_divs == 0


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium is not installed (apt-get install chromium)")
def test_report_renders_offline_in_headless_chromium(runs_root, survey_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    shutil.copy(survey_dir / "survey.csv", runs_root / "survey.csv")
    try:
        out = tmp_path / "report.html"
        assert main(["report", str(runs_root), "--out", str(out)]) == 0
    finally:
        (runs_root / "survey.csv").unlink()
    expected = parse(out.read_text()).figure_divs
    assert expected == 18
    shots = Path(os.environ.get("SARFT_SCREENSHOT_DIR") or ROOT / "artifacts" / "screenshots")
    shots = shots if shots.is_absolute() else ROOT / shots
    shots.mkdir(parents=True, exist_ok=True)
    errors, requests, dialogs = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)

        def route(r):
            requests.append(r.request.url)
            return r.continue_() if r.request.url.startswith("file://") else r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(out.as_uri())
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {expected}", timeout=60_000)
        assert page.locator(".js-plotly-plot").count() == expected
        assert page.locator(".js-plotly-plot .main-svg").count() >= expected  # each figure drew its SVG
        assert page.locator("#rds .js-plotly-plot .scatterlayer .trace").count() >= 2  # the points and y = x
        assert page.locator("#survey .js-plotly-plot").count() == 5
        assert page.locator("[data-sample='injected-1'] span[title]").count() > 3  # shaded tokens of the injected answer
        assert INJECTED in page.locator("[data-sample='injected-1']").inner_text()  # shown as text
        assert page.evaluate("typeof window.Plotly") == "object"
        # figures side by side do not overlap (each measured its column when drawn)
        boxes = page.evaluate("[...document.querySelectorAll('#rds .row .js-plotly-plot')].map(e => e.getBoundingClientRect().toJSON())")
        assert len(boxes) == 2 and boxes[0]["right"] <= boxes[1]["left"] + 1
        page.screenshot(path=shots / "report.png", full_page=True)
        browser.close()
    assert not errors, errors
    assert not dialogs  # nothing injected ran
    assert all(u.startswith("file://") for u in requests), requests
    assert (shots / "report.png").stat().st_size > 20_000


def test_report_bytes_follows_the_review_on_screen(runs_root):
    run = runs_root / "score-baron"
    saved = report.report_bytes(run).decode()
    assert 'data-sample="injected-1"' in saved  # the saved review flags it
    shown = report.report_bytes([run], reviews={str(run): (99.0, {})}).decode()  # the page's unsaved τ, no overrides
    assert "No sample is flagged" in shown and "<td class=\"num\">99</td>" in shown


def test_curves_overlay_draws_one_line_per_run():
    a = pd.DataFrame({"step": [2, 1, 3], "ce": [1.5, 2.0, 1.2]})
    b = pd.DataFrame({"step": [1, 2], "ce": [2.1, 1.9], "kl": [0.1, 0.2]})
    fig = plots.curves_overlay({"sft <b>": a, "sarft": b, "empty": pd.DataFrame()}, "ce")
    assert [t.name for t in fig.data] == ["sft &lt;b&gt;", "sarft"]
    assert list(fig.data[0].x) == [1, 2, 3] and list(fig.data[0].y) == [2.0, 1.5, 1.2]
    assert plots.curves_overlay({"a": a}, "kl").layout.annotations  # nothing to draw: a message, not an error


def test_dashboard_pages_offer_the_report_download(runs_root, survey_dir, tmp_path, monkeypatch, tiny_model_dir):
    from streamlit.testing.v1 import AppTest

    ws = tmp_path / "ws"
    for name in ("score-baron", "train-sft", "train-sarft"):
        shutil.copytree(runs_root / name, ws / "runs" / name)
    (ws / "surveys").mkdir()
    shutil.copy(survey_dir / "survey.csv", ws / "surveys" / "survey.csv")
    monkeypatch.setenv("SARFT_WORKSPACE", str(ws))
    monkeypatch.setenv("SARFT_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    for page in ("scoring", "compare", "survey"):
        at.switch_page(f"../pages/{page}.py")
        at.run()
        assert not at.exception, at.exception
        labels = [b.proto.label for b in at.get("download_button")]
        assert "Audit report (HTML)" in labels, (page, labels)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian chromium is not installed (apt-get install chromium)")
def test_dashboard_download_delivers_the_report_in_chromium(runs_root, tmp_path):
    """The compare page's button, clicked in a real browser against `python -m sarft_core app`."""
    import socket
    import subprocess
    import sys
    import time

    from playwright.sync_api import expect, sync_playwright

    ws = tmp_path / "ws"
    for name in ("train-sft", "train-sarft"):
        shutil.copytree(runs_root / name, ws / "runs" / name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, SARFT_WORKSPACE=str(ws), PYTHONPATH=str(ROOT))
    log = open(tmp_path / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sarft_core", "app", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (tmp_path / "app.log").read_text()
            time.sleep(0.3)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/compare")
            button = page.get_by_role("button", name="Audit report (HTML)")
            expect(button).to_be_visible(timeout=60_000)  # the page draws its charts first; a shared CPU is slow
            with page.expect_download() as info:
                button.click()
            path = tmp_path / "downloaded.html"
            info.value.save_as(path)
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=20)
        log.close()
    text = path.read_text()
    assert parse(text).sections == ["summary", "profile", "training", "evaluation", "comparison"]
    assert_figures_drawn_in_colour_with_room_for_axis_titles(text)  # not Streamlit's placeholder (black) colours


def test_reports_built_in_the_dashboards_process_keep_their_colours(runs_root, tmp_path, monkeypatch, tiny_model_dir):
    """Issue #28: a report downloaded from Compare drew every bar black with axis titles over the
    ticks: the dashboard's process had Streamlit's placeholder template as plotly's default. The
    pages run first (as in the app), then the reports are built as their download buttons build them;
    the figures the page shows carry the same theme as the file's."""
    from streamlit.testing.v1 import AppTest

    ws = tmp_path / "ws"
    for name in ("score-baron", "train-sft", "train-sarft"):
        shutil.copytree(runs_root / name, ws / "runs" / name)
    monkeypatch.setenv("SARFT_WORKSPACE", str(ws))
    monkeypatch.setenv("SARFT_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("../pages/compare.py")
    at.run()
    assert not at.exception, at.exception
    shown = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert shown and all(not PLACEHOLDER_COLOUR.search(json.dumps(s)) for s in shown)
    compared = report.report_bytes([ws / "runs" / "train-sft", ws / "runs" / "train-sarft"]).decode()
    assert_figures_drawn_in_colour_with_room_for_axis_titles(compared)
    assert {json.dumps(s["layout"]["template"], sort_keys=True) for s in shown} == \
        {json.dumps(layout["template"], sort_keys=True) for _, layout in plotted_figures(compared)}
    assert_figures_drawn_in_colour_with_room_for_axis_titles(report.report_bytes(ws / "runs" / "score-baron").decode())


def test_bare_folder_from_score_out_is_reported(runs_root, tmp_path):
    """`python -m sarft_core score --out DIR/scores.parquet --with-tokens` writes no run files: still a score report."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("scores.parquet", "scores.tokens.jsonl"):
        shutil.copy(runs_root / "score-baron" / name, bare / name)
    sources = report.discover(bare)
    assert [report.run_kind(r) for r in sources.runs] == ["score"]
    text = report.build_report(sources)
    assert parse(text).sections == ["summary", "profile", "rds"]
    assert "(no status)" in text and "You are Baron Vex Morrow" in text  # the role read from the scores, its demo profile
    assert "Flags follow τ = 0, no review saved." in text


def test_script_in_a_run_name_role_and_section_intro_comes_out_escaped(tmp_path):
    """Run names reach the comparison section's intro, the summary, headings and labels; the role reaches the
    profile card and the title: every one of them is text, escaped exactly once."""
    evil = "<script>alert(7)"  # no slash: a directory may carry it in its name
    for method, refusal in (("sft", 0.5), ("sarft", 0.8)):
        write_train_run(tmp_path, f"{method}-{evil}", method, 0.5, refusal, 30.0, extra_config={"role": f"Role {INJECTED}"})
    text = report.build_report(report.discover(tmp_path))
    tags = parse(text)
    assert "comparison" in tags.sections
    assert evil not in text and INJECTED not in text
    assert tags.scripts == 2 + tags.figure_divs  # plotly config + library + one per figure: nothing injected
    intro = re.search(r'<section id="comparison"><h2>[^<]*</h2><p class="intro">(.*?)</p>', text, re.S).group(1)
    assert "sft-&lt;script&gt;alert(7)" in intro and "sarft-&lt;script&gt;alert(7)" in intro
    assert "&amp;lt;" not in text  # escaped once, not twice
    assert "Role &lt;script&gt;alert(1)&lt;/script&gt;" in text  # the role, in the profile card and the title


def test_every_template_is_packaged():
    """The wheel carries the templates and their CSS: each file in sarft_core/templates matches a
    package-data pattern of pyproject.toml (a missing one would only fail once installed)."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sarft_core"]
    files = sorted(p.relative_to(ROOT / "sarft_core").as_posix() for p in (ROOT / "sarft_core" / "templates").iterdir() if p.is_file())
    assert {"templates/report.html.j2", "templates/report.css"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)] == []


def test_flagged_examples_rank_by_the_margin_without_the_reference_pass():
    """A two-pass score table (no reference: s_role and s_unsafe are NaN) still ranks its flagged
    samples by logp_unsafe - logp_role; the margin was computed as s_unsafe - s_role (all NaN)."""
    import math

    import pandas as pd

    from sarft_core.report import flagged_examples

    nan = math.nan
    scores = pd.DataFrame({"id": ["a", "b", "c"], "input": ["x"] * 3, "output": ["y"] * 3,
                           "logp_role": [-2.0, -2.0, -1.0], "logp_unsafe": [-1.5, -1.0, -3.0],
                           "s_role": [nan] * 3, "s_unsafe": [nan] * 3})
    shown, closest = flagged_examples(scores, pd.Series([True, True, False]), {}, 5)
    assert not closest and [e["id"] for e in shown] == ["b", "a"]
    assert all(math.isfinite(e["margin"]) for e in shown)
