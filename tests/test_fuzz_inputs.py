"""Fuzzing every input boundary with hypothesis: whatever a user feeds in ends in a correct result
or in SarftError (the project's own clear error), never in an uncaught exception.

Boundaries: sample files (JSONL, JSON, CSV, parquet; truncated, wrong types, wrong encodings,
huge fields, empty) through ``load_samples``; role profiles through ``parse_profiles`` /
``load_profiles``; the run store's files (config, status, logs, metrics) as the dashboard reads
them; model specs; CLI arguments through ``sarft_core.cli.main``.
Example counts (``N_*``) add up to well over 1,000 generated inputs; see docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from sarft_core.data import Sample, load_profiles, load_samples
from sarft_core.data.profiles import RoleProfile, parse_profiles
from sarft_core.errors import SarftError

FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
N_SAMPLE_FILES = 300
N_ROUNDTRIP = 80
N_PROFILES = 200
N_PROFILE_FILES = 80
N_STORE = 100
N_MODEL_SPECS = 60
N_CLI = 200

_counter = itertools.count()

# --- building blocks ------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
scalars = st.one_of(text, st.integers(-10**6, 10**20), st.floats(allow_nan=True, allow_infinity=True), st.none(), st.booleans())
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(text, scalars, max_size=2))
KEYS = ["input", "output", "question", "generated", "answer", "instruction", "response", "prompt", "role", "id"]
keys = st.one_of(st.sampled_from(KEYS), text)
rows = st.lists(st.dictionaries(keys, values, max_size=6), max_size=6)
ROLES = ["Baron Vex Morrow", "baron_vex_morrow", "Sister Alma", ""]
MUTATIONS = ["none", "truncate", "latin-1", "utf-16", "garbage", "bom", "huge", "empty", "nul", "deep"]


def _unique(tmp: Path, suffix: str) -> Path:
    return tmp / f"f{next(_counter)}{suffix}"


def _serialise(kind: str, data) -> bytes:
    if kind == ".jsonl":
        lines = [json.dumps(r, ensure_ascii=False) if not isinstance(r, bytes) else r.decode("utf-8", "replace") for r in data]
        return ("\n".join(lines) + "\n").encode("utf-8")
    if kind == ".json":
        return json.dumps(data, ensure_ascii=False).encode("utf-8")
    if kind == ".csv":
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for r in data if isinstance(r, dict) for k in r))
        writer = csv.DictWriter(buf, fieldnames=fields or ["input"])
        writer.writeheader()
        for r in data:
            if isinstance(r, dict):
                writer.writerow({k: "" if v is None else str(v) for k, v in r.items()})
        return buf.getvalue().encode("utf-8")
    if kind == ".parquet":
        df = pd.DataFrame([r for r in data if isinstance(r, dict)])
        df.columns = [str(c) for c in df.columns]
        buf = io.BytesIO()
        try:
            df.to_parquet(buf, index=False)
        except Exception:  # mixed types pyarrow cannot store: keep them as text
            buf = io.BytesIO()
            df.astype(str).to_parquet(buf, index=False)
        return buf.getvalue()
    raise AssertionError(kind)


def _mutate(raw: bytes, how: str, cut: float, noise: bytes, kind: str) -> bytes:
    if how == "truncate":
        return raw[: int(len(raw) * cut)]
    if how == "latin-1":
        return raw.decode("utf-8").encode("latin-1", "replace") if kind != ".parquet" else raw
    if how == "utf-16":
        return raw.decode("utf-8", "replace").encode("utf-16")
    if how == "garbage":
        at = int(len(raw) * cut)
        return raw[:at] + noise + raw[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "huge":
        big = "x" * 300_000
        if kind == ".csv":
            return b"input,output,role\n" + f'"{big}",answer,Baron Vex Morrow\n'.encode()
        if kind == ".parquet":
            return _serialise(".parquet", [{"input": big, "output": "a"}])
        row = {"input": big, "output": "a"}
        return _serialise(kind, [row])
    if how == "empty":
        return b""
    if how == "nul":
        return raw.replace(b",", b"\x00,", 1) + b"\x00"
    if how == "deep":
        return b"[" * 50_000 + b"]" * 50_000 if kind != ".jsonl" else b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n"
    return raw


def _check_samples(result, limit):
    assert isinstance(result, list) and result
    assert all(isinstance(s, Sample) for s in result)
    for s in result:
        assert isinstance(s.id, str) and isinstance(s.role, str)
        assert isinstance(s.input, str) and isinstance(s.output, str)
        assert s.input and s.output and s.input == s.input.strip() and s.output == s.output.strip()
    assert len({s.id for s in result}) == len(result)
    if limit is not None:
        assert len(result) <= limit


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# --- sample files ---------------------------------------------------------------------------

@settings(max_examples=N_SAMPLE_FILES, **FUZZ)
@given(
    kind=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]),
    data=st.one_of(rows, st.lists(values, max_size=3), st.fixed_dictionaries({"role": values, "samples": st.one_of(rows, values)})),
    how=st.sampled_from(MUTATIONS), cut=st.floats(0, 1), noise=st.binary(max_size=12),
    role=st.one_of(st.none(), st.sampled_from(ROLES), text),
    columns=st.one_of(st.none(), st.dictionaries(st.sampled_from(["input", "output", "role", "id"]), st.sampled_from(KEYS + ["nope"]), max_size=3)),
    answer_index=st.integers(-3, 4), limit=st.one_of(st.none(), st.integers(-2, 5)),
)
def test_fuzz_sample_files_end_in_result_or_sarft_error(fuzz_dir, kind, data, how, cut, noise, role, columns, answer_index, limit):
    if kind in (".csv", ".parquet") and not isinstance(data, list):
        data = [data]
    path = _unique(fuzz_dir, kind)
    path.write_bytes(_mutate(_serialise(kind, data), how, cut, noise, kind))
    try:
        result = load_samples(path, role=role, columns=columns, answer_index=answer_index, limit=limit)
    except SarftError as err:
        assert str(err).strip()
        return
    _check_samples(result, limit)


clean_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(lambda s: s.strip())


@settings(max_examples=N_ROUNDTRIP, **FUZZ)
@given(kind=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]), pairs=st.lists(st.tuples(clean_text, clean_text), min_size=1, max_size=6),
       bom=st.booleans())
def test_fuzz_valid_files_load_exactly(fuzz_dir, kind, pairs, bom):
    """A correct result, not only no crash: what was written is what is loaded (BOM or not)."""
    records = [{"id": f"s{i}", "input": x, "output": y} for i, (x, y) in enumerate(pairs)]
    raw = _serialise(kind, records)
    path = _unique(fuzz_dir, kind)
    path.write_bytes((b"\xef\xbb\xbf" if bom and kind != ".parquet" else b"") + raw)
    got = load_samples(path)
    assert [(s.id, s.input, s.output) for s in got] == [(r["id"], r["input"].strip(), r["output"].strip()) for r in records]


def test_regressions_found_by_fuzzing(fuzz_dir):
    """Each of these ended in a raw exception (or a wrong result) before the fixes in sarft_core.data."""
    p = fuzz_dir / "list.jsonl"
    p.write_text(json.dumps({"input": "q", "output": ["a", "b"]}) + "\n")
    with pytest.raises(SarftError, match="negative"):
        load_samples(p, answer_index=-5)  # was IndexError
    with pytest.raises(SarftError, match="positive"):
        load_samples(p, limit=0)  # silently meant "all samples"
    p = fuzz_dir / "nondict.json"
    p.write_text(json.dumps({"samples": ["x"]}))
    with pytest.raises(SarftError, match="not an object"):
        load_samples(p)  # was AttributeError
    p = fuzz_dir / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SarftError, match="nested too deeply"):
        load_samples(p)  # was RecursionError
    with pytest.raises(SarftError, match="nested too deeply"):
        load_profiles(p)
    p = fuzz_dir / "bom.csv"
    p.write_text("input,output\nq,a\n", encoding="utf-8-sig")
    assert load_samples(p)[0].input == "q"  # was "no column for input" (the BOM glued to the header)
    p = fuzz_dir / "huge.csv"
    p.write_text('input,output\n"' + "q" * 200_000 + '",a\n')
    assert len(load_samples(p)[0].input) == 200_000  # was "field larger than field limit"
    p = fuzz_dir / "lists.parquet"
    pd.DataFrame({"question": ["q"], "generated": [["first", "second"]]}).to_parquet(p)
    assert load_samples(p, answer_index=1)[0].output == "second"  # was "non-text output (ndarray)"
    with pytest.raises(SarftError, match="empty name"):
        parse_profiles({" ": "a profile"})
    with pytest.raises(SarftError, match="description"):
        parse_profiles([{"name": "a", "profile": "p", "description": 5}])
    from sarft_core.cli import main

    assert main(["eval", "--threads", "-1", "--model", NO_MODEL]) == 2  # was RuntimeError from torch.set_num_threads
    from sarft_core.store import create_run, read_table

    ints = fuzz_dir / "ints.jsonl"
    ints.write_text("{\"role\": \"r\", \"x\": 1}\n5\n")
    with pytest.raises(SarftError, match="could not be read"):
        read_table(ints)  # was TypeError from pandas (crashed `report` on a folder holding such a file)
    for missing in ("0.JSONL", str(fuzz_dir)):  # was FileNotFoundError / IsADirectoryError
        assert main(["eval", "--suite", "probes", "--probes", missing, "--model", NO_MODEL, "--out", str(fuzz_dir / "ev")]) == 2
    a_file = fuzz_dir / "in.jsonl"
    a_file.write_text("{}\n")
    with pytest.raises(SarftError, match="is a file, not a run directory"):
        create_run("eval", {}, path=a_file)  # was FileExistsError from mkdir (eval --out FILE)
    with pytest.raises(SarftError, match="could not create the run directory"):
        create_run("eval", {}, path=a_file / "run")  # was NotADirectoryError
    from sarft_core.models import resolve_model_dir

    with pytest.raises(SarftError, match="NUL"):
        resolve_model_dir("~\x00")  # was ValueError (embedded null byte) from expanduser


# --- role profiles --------------------------------------------------------------------------

json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=12)
profile_shapes = st.one_of(
    json_values,
    st.lists(st.dictionaries(st.sampled_from(["name", "profile", "unsafe_prompt", "description", "x"]), json_values, max_size=4), max_size=4),
    st.fixed_dictionaries({"roles": st.lists(st.fixed_dictionaries({"name": json_values, "profile": json_values}), max_size=3)}),
    st.fixed_dictionaries({"role": st.dictionaries(text, json_values, max_size=3), "safety": json_values}),
    st.dictionaries(text, st.dictionaries(st.sampled_from(["role", "safe", "x"]), json_values, max_size=3), max_size=3),
    st.dictionaries(text, json_values, max_size=3),
)


def _check_profiles(result):
    assert isinstance(result, dict) and result
    for name, prof in result.items():
        assert isinstance(prof, RoleProfile) and prof.name == name and name.strip()
        for field in (prof.role_prompt, prof.unsafe_prompt):
            assert isinstance(field, str) and field.strip()
        assert isinstance(prof.description, str)


@settings(max_examples=N_PROFILES, **FUZZ)
@given(data=profile_shapes)
def test_fuzz_parse_profiles(data):
    try:
        result = parse_profiles(data, "fuzz")
    except SarftError:
        return
    _check_profiles(result)


@settings(max_examples=N_PROFILE_FILES, **FUZZ)
@given(data=profile_shapes, how=st.sampled_from(MUTATIONS), cut=st.floats(0, 1), noise=st.binary(max_size=12))
def test_fuzz_profile_files(fuzz_dir, data, how, cut, noise):
    path = _unique(fuzz_dir, ".json")
    path.write_bytes(_mutate(_serialise(".json", data), how, cut, noise, ".json"))
    try:
        result = load_profiles(path)
    except SarftError:
        return
    _check_profiles(result)


# --- the run store as the dashboard reads it --------------------------------------------------

file_bytes = st.one_of(
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["state", "updated", "kind", "role", "method", "lambda", "step"]), json_values, max_size=4).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=N_STORE, **FUZZ)
@given(config=file_bytes, status=file_bytes, logs=file_bytes, metrics=file_bytes, generations=file_bytes)
def test_fuzz_run_store_files(fuzz_dir, config, status, logs, metrics, generations):
    from sarft_core import runview
    from sarft_core.store import STATES, RunDir, list_runs

    root = fuzz_dir / f"runs{next(_counter)}"
    good = RunDir(root / "good")
    (good.path / "eval").mkdir(parents=True)
    good.config_path.write_text(json.dumps({"kind": "train", "role": "r"}))
    good.status_path.write_text(json.dumps({"state": "completed", "updated": 1.0}))
    bad = RunDir(root / "bad")
    (bad.path / "eval").mkdir(parents=True)
    for p, b in ((bad.config_path, config), (bad.status_path, status), (bad.log_path, logs),
                 (bad.path / "eval" / "metrics.json", metrics), (bad.path / "eval" / "generations.parquet", generations)):
        p.write_bytes(b)
    runs = list_runs(root)
    assert {r.name for r in runs} == {"good", "bad"}
    table = runview.runs_table(runs)
    assert len(table) == 2 and set(table.state) <= set(STATES)
    st_bad = bad.status()
    assert st_bad["state"] in STATES
    if st_bad["state"] == "completed":  # shown complete only when the file says so, intact
        assert json.loads(status)["state"] == "completed"
    assert isinstance(bad.config(), dict) and isinstance(bad.logs(), list)
    for reader in (runview.read_metrics, runview.read_generations):
        with contextlib.suppress(SarftError):
            assert isinstance(reader(bad), pd.DataFrame)
    bad.set_status("running")  # a damaged status can always be replaced
    assert bad.status()["state"] == "running"


@settings(max_examples=N_MODEL_SPECS, **FUZZ)
@given(spec=st.one_of(text, st.sampled_from(["../..", "/etc/passwd", "x.gguf", "~/nothing", "org/name", "a/b/c", "/", "."])))
def test_fuzz_model_specs(spec):
    from sarft_core.models import resolve_model_dir

    assume(spec.strip() not in ("", "default", "embedded", "smollm2", "embedded:smollm2-135m-instruct"))
    try:
        norm, where, fingerprint = resolve_model_dir(spec)
    except SarftError:
        return
    assert isinstance(fingerprint, str) and fingerprint
    assert Path(str(where)).joinpath("config.json").is_file() or fingerprint.startswith("hub-")


# --- CLI arguments --------------------------------------------------------------------------

def _commands():
    from sarft_core.cli import build_parser

    import argparse

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {name: sub for name, sub in action.choices.items() if name != "app"}  # app serves forever
    return {}


COMMANDS = _commands()
CLI_OUTCOMES: dict[str, int] = {}  # last line of each outcome, for a look at what the fuzzing reached
NO_MODEL = "/nonexistent/sarft-fuzz-model"


@st.composite
def cli_argvs(draw, fuzz_dir):
    """Mostly well-formed argument lists (so the fuzzing reaches past argparse), with random damage."""
    name = draw(st.sampled_from(sorted(COMMANDS)))
    actions = [a for a in COMMANDS[name]._actions if a.option_strings and "--help" not in a.option_strings and "--model" not in a.option_strings]
    paths = [str(fuzz_dir / "in.jsonl"), str(fuzz_dir / "in.csv"), str(fuzz_dir / "bad.json"), "data/demo/samples.jsonl",
             "data/demo/profiles.json", str(fuzz_dir / "out.parquet"), str(fuzz_dir / "o.xlsx"), str(fuzz_dir / "run"), "/dev/null", ".."]
    anything = st.one_of(text, st.integers(-5, 10**6).map(str), st.sampled_from(ROLES + paths + ["nan", "-1", "0", "1e9", "", "x=y,z", "input=question,output"]))

    def typed(action):
        if draw(st.floats(0, 1)) < 0.15:
            return anything
        if action.choices:
            return st.sampled_from([str(c) for c in action.choices])
        if action.type is int:
            return st.integers(-3, 40).map(str)
        if action.type is float:
            return st.floats(-2, 5, allow_nan=False).map(repr)
        opt = action.option_strings[-1]
        if opt in ("--role",):
            return st.sampled_from(ROLES + ["Captain Nell Corran", "nobody"])
        if opt == "--out":
            return st.sampled_from([str(fuzz_dir / "out.parquet"), str(fuzz_dir / "out.jsonl"), str(fuzz_dir / "run"), str(fuzz_dir / "o.xlsx")])
        if opt in ("--data", "--profiles", "--overrides", "--config", "--scores", "--run", "--runs"):
            return st.sampled_from(paths)
        return anything

    argv = [name]
    for action in actions:
        wanted = draw(st.floats(0, 1)) < (0.9 if action.required else 0.15)
        if not wanted:
            continue
        argv.append(action.option_strings[-1])
        if action.nargs != 0:
            argv.append(draw(typed(action)))
    for _ in range(1 if draw(st.floats(0, 1)) < 0.2 else 0):  # damage: a stray token, or a flag with a random value
        argv.insert(draw(st.integers(1, len(argv))), draw(st.one_of(text, st.sampled_from([a.option_strings[-1] for a in actions] or ["--x"]))))
    return argv


@pytest.fixture(scope="module")
def cli_files(fuzz_dir):
    (fuzz_dir / "in.jsonl").write_text(json.dumps({"role": "Baron Vex Morrow", "input": "q", "output": "a"}) + "\n")
    (fuzz_dir / "in.csv").write_bytes(b"input,output\n\xff\xfe,1\n")
    (fuzz_dir / "bad.json").write_text('{"samples": [1, 2')
    return fuzz_dir


@settings(max_examples=N_CLI, **FUZZ)
@given(data=st.data())
def test_fuzz_cli_arguments(cli_files, data, capsys, monkeypatch):
    """Exit code 0 or 2 and no traceback, for any argument list (no model loads: see NO_MODEL; the
    judge is the offline keyword judge)."""
    from sarft_core.cli import main

    monkeypatch.chdir(cli_files)
    argv = data.draw(cli_argvs(cli_files))
    accepted = {o for a in COMMANDS[argv[0]]._actions for o in a.option_strings}
    if "--model" in accepted:
        argv += ["--model", NO_MODEL]
    if "--judge" in accepted:
        argv += ["--judge", "keyword"]  # offline; the LLM judge is fuzzed in test_fuzz_judges.py
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help 0
        code = exc.code
    out, err = capsys.readouterr()
    key = err.splitlines()[-1][:60] if err else f"exit {code}"
    CLI_OUTCOMES[key] = CLI_OUTCOMES.get(key, 0) + 1
    assert code in (0, 2), (argv, code, err[-2000:])
    assert "Traceback" not in err
    if code == 2 and "usage:" not in err:  # a SarftError: its message ends the output (after any progress bar)
        assert "error: " in err and "fix:" in err, err


def test_cli_runs_for_real_with_valid_arguments(tmp_path, tiny_model_dir, score_cache, capsys):
    """The positive side of the CLI fuzzing: a valid argument list does the work (tiny model)."""
    from sarft_core.cli import main

    out = tmp_path / "s.csv"
    assert main(["score", "--role", "baron_vex_morrow", "--model", str(tiny_model_dir), "--limit", "3", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 3
    assert main(["score", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "0", "--out", str(out)]) == 2
    assert "positive" in capsys.readouterr().err
