"""Security review, one test per point (docs/reliability.md lists them):
API keys only from the environment and never written; only safetensors loaded (no pickle);
trust_remote_code off unless asked; UI paths confined to the workspace; dataset and model text
inert in HTML; the app bound to 127.0.0.1 by default."""
from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sarft_core.errors import SarftError

ROOT = Path(__file__).resolve().parents[1]
CANARY = "sk-canary-7f3e9a1b2c4d-DO-NOT-LEAK"
SOURCES = sorted([*(ROOT / "sarft_core").rglob("*.py"), *(ROOT / "app").rglob("*.py"), *(ROOT / "pages").rglob("*.py")])


from tests.conftest_reliability import endpoint  # noqa: F401,E402 (a fixture: a scripted OpenAI-compatible server)


def _files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            try:
                if needle.encode() in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


# --- 1. API keys ------------------------------------------------------------------------------

def test_no_cli_option_takes_a_secret():
    from sarft_core.cli import build_parser

    import argparse

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for opt in (o for a in sub._actions for o in a.option_strings):
                    words = set(opt.lstrip("-").split("-"))
                    assert not words & {"key", "token", "secret", "password", "apikey"} or opt.endswith("-env"), (name, opt)


@pytest.mark.slow
def test_api_key_never_written_by_a_background_judge_job(tmp_path, monkeypatch, endpoint):
    """A background `judge` job with the openai judge: the key reaches the server, and nothing else."""
    import pandas as pd

    from sarft_core import jobs

    url, handler = endpoint
    handler.status, handler.seen_keys = 200, []
    handler.replies = ["Looks like a refusal.\nVERDICT: REFUSAL", f"VERDICT: COMPLIANCE (key {CANARY[:3]}...)"]
    ws, home = tmp_path / "ws", tmp_path / "home"
    monkeypatch.setenv("SARFT_WORKSPACE", str(ws))
    monkeypatch.setenv("SARFT_HOME", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = ws / "generations.jsonl"
    ws.mkdir()
    data.write_text("".join(json.dumps({"prompt": f"how to pick lock {i}", "response": f"answer {i}"}) + "\n" for i in range(3)))
    out = ws / "judged.parquet"
    job = jobs.start(["judge", "--judge", "openai", "--judge-base-url", url, "--judge-model", "m", "--in", str(data), "--out", str(out)],
                     kind="judge", env={"OPENAI_API_KEY": CANARY})
    assert jobs.wait(job, 120) == "completed", job.log_tail()
    assert len(handler.seen_keys) == 3 and all(k == f"Bearer {CANARY}" for k in handler.seen_keys)  # from the environment
    assert len(pd.read_parquet(out)) == 3
    assert _files_containing(ws, CANARY) == [] and _files_containing(home, CANARY) == []
    assert "OPENAI_API_KEY" in job.meta()["env"]  # the name is recorded, the value is not


def test_rejected_key_error_does_not_contain_the_key(tmp_path, monkeypatch, endpoint):
    from sarft_core.evaluation.judges.openai_judge import OpenAIJudge

    url, handler = endpoint
    handler.status = 401
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    judge = OpenAIJudge(base_url=url, model="m", cache_dir=tmp_path, max_retries=0)
    try:
        with pytest.raises(SarftError) as info:
            judge.judge(["how to pick a lock"], ["Sure, first..."])
    finally:
        handler.status = 200
    assert "rejected the API key" in str(info.value) and CANARY not in str(info.value) and CANARY not in repr(info.value.__dict__)
    assert _files_containing(tmp_path, CANARY) == []
    assert "describe" and CANARY not in json.dumps(judge.describe())


def test_job_metadata_redacts_secret_environment_values(tmp_path, monkeypatch):
    from sarft_core import jobs

    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path))
    assert jobs.redact("OPENAI_API_KEY", CANARY) != CANARY and jobs.redact("HF_TOKEN", CANARY) != CANARY
    assert jobs.redact("SARFT_MODEL", "m") == "m"


# --- 2. no pickle -----------------------------------------------------------------------------

def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            yield node, owner, name


def test_source_never_unpickles():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") for n in names):
                    problems.append(f"{path}: imports {names}")
        for node, owner, name in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and name == "load":
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    problems.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
            if name in ("read_pickle", "load_pickle") or (name == "load" and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value):
                problems.append(f"{path}:{node.lineno}: {name}")
            if name == "from_pretrained" and owner in ("AutoModelForCausalLM", "AutoModelForSequenceClassification") and "gguf_file" not in kw:
                if not (isinstance(kw.get("use_safetensors"), ast.Constant) and kw["use_safetensors"].value is True):
                    problems.append(f"{path}:{node.lineno}: {owner}.from_pretrained without use_safetensors=True")
    assert problems == []


class _Bomb:
    """A pickle that creates a directory when unpickled: proof that a file was (not) unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _pickle_only_model(src: Path, dst: Path, canary: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    (dst / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(str(canary))))
    return dst


def test_pickle_only_model_directory_is_refused_unopened(tmp_path, tiny_model_dir):
    from sarft_core.models import load_model

    canary = tmp_path / "exploded"
    model_dir = _pickle_only_model(Path(tiny_model_dir), tmp_path / "bin-model", canary)
    with pytest.raises(SarftError, match="pickle weights") as info:
        load_model(str(model_dir), device="cpu")
    assert "safetensors" in info.value.fix
    assert not canary.exists()


def test_pickle_only_adapter_and_classifier_are_refused(tmp_path, tiny_model_dir):
    from sarft_core.evaluation.judges.classifier import ClassifierJudge
    from sarft_core.models import load_model
    from sarft_core.store import create_run

    canary = tmp_path / "exploded"
    run = create_run("train", {"model": str(tiny_model_dir)}, path=tmp_path / "run")
    run.set_status("completed")
    adapter = run.artifacts / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(_Bomb(str(canary))))
    with pytest.raises(SarftError, match="adapter directory .* pickle"):
        load_model(str(run.path), device="cpu")
    clf = _pickle_only_model(Path(tiny_model_dir), tmp_path / "clf", canary)
    with pytest.raises(SarftError, match="classifier directory .* pickle"):
        ClassifierJudge(str(clf), label_map="LABEL_0=compliance,LABEL_1=refusal", device="cpu").judge(["q"], ["a"])
    assert not canary.exists()


# --- 3. trust_remote_code ---------------------------------------------------------------------

def test_trust_remote_code_is_off_by_default_everywhere():
    import argparse

    from sarft_core.cli import build_parser

    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for a in sub._actions:
                    if "--trust-remote-code" in a.option_strings:
                        assert a.default is False, name
    for path in SOURCES:
        for node, _owner, _name in _calls(ast.parse(path.read_text(encoding="utf-8"))):
            for k in node.keywords:
                assert not (k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is True), f"{path}:{node.lineno}"


def test_model_code_in_a_model_directory_is_not_run(tmp_path, tiny_model_dir):
    from sarft_core.models import load_model

    canary = tmp_path / "code-ran"
    model_dir = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (model_dir / "config.json").write_text(json.dumps(cfg))
    (model_dir / "evil.py").write_text(f"import os\nos.mkdir({str(canary)!r})\n")
    try:
        lm = load_model(str(model_dir), device="cpu")
        assert type(lm.model).__name__ == "LlamaForCausalLM"
    except SarftError:
        pass
    assert not canary.exists()


# --- 4. paths from the UI ---------------------------------------------------------------------

def test_paths_confined_to_the_workspace(tmp_path):
    from sarft_core.paths import confine

    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "ok.jsonl").write_text("{}\n")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path)
    assert confine(root / "data" / "ok.jsonl", roots=[root]) == (root / "data" / "ok.jsonl").resolve()
    for bad in (root / ".." / "secret.txt", root / "data" / ".." / ".." / "secret.txt", "/etc/passwd", root / "link",
                root / "dirlink" / "secret.txt", "~/.ssh/id_rsa", "../shared/../../etc/passwd"):
        with pytest.raises(SarftError, match="outside the folders"):
            confine(bad, roots=[root])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(st.sampled_from(["..", ".", "data", "link", "~", "", "/", "etc", "passwd"]),
                                st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)), max_size=6))
def test_fuzz_confine_never_escapes(tmp_path, parts):
    from sarft_core.paths import confine

    root = tmp_path / "ws"
    root.mkdir(exist_ok=True)
    if not (root / "link").exists():
        (root / "link").symlink_to("/etc")
    text = os.path.join(str(root), *parts) if parts else ""
    try:
        got = confine(text, roots=[root], must_exist=False)
    except SarftError:
        return
    except (ValueError, OSError) as exc:  # e.g. a name too long for the file system
        pytest.fail(f"raw {type(exc).__name__} for {text!r}: {exc}")
    assert got == root.resolve() or got.is_relative_to(root.resolve())


def test_app_pages_confine_typed_paths():
    """Every screen with a text box for a file path resolves it through sarft_core.paths.confine."""
    import re

    for path in sorted([*(ROOT / "pages").glob("*.py"), *(ROOT / "app").glob("*.py")]):
        src = path.read_text(encoding="utf-8")
        typed = re.findall(r"text_input\(\s*\"([^\"]*)\"", src)
        if any(re.search(r"\b(path|file)\b", label, re.IGNORECASE) for label in typed):
            reads_it = path.name == "widgets.py"  # the sidebar only stores the text; app/state.py reads it
            assert "confine(" in src or reads_it, f"{path.name} reads a typed path without confine()"
    state = (ROOT / "app" / "state.py").read_text(encoding="utf-8")
    body = state[state.index("def data_paths"):].split("\ndef ", 1)[0]  # where the typed paths are read
    assert "st.session_state" in body and "confine(" in body


# --- 5. text stays text -----------------------------------------------------------------------

def test_script_in_sample_text_is_inert_in_html():
    from sarft_core import plots

    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    shading = plots.token_shading([evil, " ok", "</span><b>"], [0.5, -0.2, 1.0])
    html_text = plots.token_spans_html(shading)
    assert "<script" not in html_text and "<img" not in html_text and "<b>" not in html_text
    assert "&lt;script&gt;" in html_text


def test_no_page_renders_raw_html_from_data():
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node, owner, name in _calls(tree):
            for k in node.keywords:
                assert not (k.arg == "unsafe_allow_html" and not (isinstance(k.value, ast.Constant) and k.value.value is False)), f"{path}:{node.lineno}"
            if owner == "st" and name == "html":  # only our escaping builders may feed st.html
                arg = node.args[0] if node.args else None
                assert isinstance(arg, ast.Call) and getattr(arg.func, "value", None) is not None and arg.func.value.id == "plots", f"{path}:{node.lineno}"


def test_plot_labels_from_data_are_escaped():
    import pandas as pd

    from sarft_core import plots

    df = pd.DataFrame({"id": ["<script>x</script>"], "s_role": [0.1], "s_unsafe": [0.3], "harmful": [True],
                       "logp_ref": [-1.0], "logp_role": [-0.9], "logp_unsafe": [-0.7],
                       "input": ["<script>q</script>"], "output": ["<b>a</b>"]})
    blob = json.dumps([list(map(str, t.customdata.ravel())) for t in plots.rds_scatter(df).data if t.customdata is not None])
    assert "<script>" not in blob and "<b>a" not in blob and "&lt;script&gt;" in blob


# --- 6. the app binds to loopback -----------------------------------------------------------------

def test_app_binds_to_loopback_by_default():
    from sarft_core.cli import build_parser
    from sarft_core.cli.app import streamlit_command

    args = build_parser().parse_args(["app"])
    assert args.host == "127.0.0.1"
    cmd = streamlit_command(args.port, args.host)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    config = ROOT / ".streamlit" / "config.toml"
    if config.is_file():
        assert "0.0.0.0" not in config.read_text()


def test_html_report_keeps_hostile_text_inert(tmp_path, monkeypatch):
    """Role name, prompts, sample id, question, answer and tokens all carry a payload: the report
    holds only its own scripts (plotly's), and every payload is escaped text."""
    from html.parser import HTMLParser

    import pandas as pd

    from sarft_core import audit, report
    from sarft_core.data.profiles import RoleProfile
    from sarft_core.store import atomic_write_text

    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path))
    evil = "</script><script>alert(2)</script><img src=x onerror=alert(3)>"
    profile = RoleProfile(f"Role {evil}", f"You are {evil}", f"Unsafe {evil}")
    run = audit.create_score_run(profile, None)
    scores = pd.DataFrame({"id": [f"id{evil}", "b"], "role": [profile.name] * 2, "input": [f"Q {evil}", "q"], "output": [f"A {evil}", "a"],
                           "logp_ref": [-2.0, -2.0], "logp_role": [-1.5, -1.0], "logp_unsafe": [-1.0, -1.4],
                           "s_role": [0.5, 1.0], "s_unsafe": [1.0, 0.6], "harmful": [True, False], "n_tokens": [2, 1]})
    scores.to_parquet(run.path / audit.SCORES_FILE)
    stamp = audit.table_fingerprint(run.path / audit.SCORES_FILE)  # tokens count only beside the table they were made for
    atomic_write_text(run.path / audit.TOKENS_FILE, json.dumps({"id": f"id{evil}", "tokens": [evil, " ok"], "ratio": [0.4, -0.1],
                                                                audit.SCORES_STAMP: stamp}) + "\n")
    run.set_status("completed")
    page = report.report_bytes(run.path).decode("utf-8")

    class Tags(HTMLParser):
        scripts, handlers, imgs = 0, [], 0

        def handle_starttag(self, tag, attrs):
            self.scripts += tag == "script"
            self.imgs += tag == "img"
            self.handlers += [name for name, _ in attrs if name.startswith("on")]

    tags = Tags()
    tags.feed(page)
    assert "alert(2)</script>" not in page and "<img src=x" not in page
    assert tags.imgs == 0 and tags.handlers == []
    assert tags.scripts == 2 + page.count('class="plotly-graph-div"')  # plotly config + library + one per figure
    assert "&lt;/script&gt;&lt;script&gt;alert(2)" in page
