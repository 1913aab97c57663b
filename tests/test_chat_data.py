"""Chat encoding and data loaders: formats, validation, clear errors."""
import json
import re

import pytest

from sarft_core.chat import encode, render_prompt
from sarft_core.data import DEMO_PROFILES, DEMO_SAMPLES, get_profile, load_profiles, load_samples, match_role
from sarft_core.data.profiles import GENERIC_UNSAFE_INSTRUCTION, parse_profiles
from sarft_core.errors import SarftError
from tests.conftest import ROLE_PROMPTS, ROLEBENCH_SPE, SHARED_DATA


def test_empty_system_turn_blocks_default_system_prompt(tiny_lm):
    text = render_prompt(tiny_lm.tokenizer, "", "Hi")
    assert "SmolLM" not in text  # the template's default system prompt must not slip in
    assert text.startswith("<|im_start|>system\n<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_encode_appends_eos_and_truncates_as_published(tiny_lm):
    tok = tiny_lm.tokenizer
    e = encode(tok, "You are a pirate.", "Who are you?", "A pirate, arr!")
    assert e.answer_ids[-1] == tok.eos_token_id
    assert e.input_ids == e.prompt_ids + e.answer_ids
    long = encode(tok, "word " * 800, "q", "answer " * 300, max_prompt_tokens=512, max_answer_tokens=128)
    assert len(long.prompt_ids) == 512 and long.prompt_truncated
    assert len(long.answer_ids) == 128 and long.answer_truncated
    # the prompt keeps its beginning, as the release's prompt[:512]
    full = tok(render_prompt(tok, "word " * 800, "q"), add_special_tokens=False)["input_ids"]
    assert long.prompt_ids == full[:512]


def test_demo_data_has_three_contrasting_roles():
    profiles = load_profiles(DEMO_PROFILES)
    assert len(profiles) >= 3
    for name in profiles:
        assert len(load_samples(DEMO_SAMPLES, role=name)) >= 40


def test_rolebench_loader_filters_role_and_takes_first_answer():
    samples = load_samples(ROLEBENCH_SPE, role="Freddy_Krueger")
    assert len(samples) == 50 and {s.role for s in samples} == {"Freddy Krueger"}
    first = json.loads(next(line for line in open(ROLEBENCH_SPE) if '"Freddy Krueger"' in line))
    assert samples[0].output == first["generated"][0].strip()
    # some of the role's rows hold one answer only: a second answer is refused, never replaced by the first
    with pytest.raises(SarftError, match=r"has 1 answer\(s\), so --answer-index 1 does not exist"):
        load_samples(ROLEBENCH_SPE, role="Freddy Krueger", answer_index=1)


def test_role_names_match_across_spellings():
    profiles = load_profiles(ROLE_PROMPTS)
    assert get_profile(profiles, "Dr. Hannibal Lecter").name == "Dr. Hannibal Lecter"
    assert match_role("dr._hannibal_lecter", ["Dr. Hannibal Lecter"]) == "Dr. Hannibal Lecter"


def test_unknown_role_suggests_closest():
    with pytest.raises(SarftError) as err:
        load_samples(ROLEBENCH_SPE, role="Fredy Kruger")
    assert "Freddy Krueger" in str(err.value)


def test_all_three_profile_formats():
    rp = load_profiles(ROLE_PROMPTS)
    assert len(rp) == 95
    assert rp["Freddy Krueger"].unsafe_prompt != rp["Freddy Krueger"].role_prompt
    v1 = load_profiles(SHARED_DATA / "profiles" / "role_prompts_v1.json")
    assert len(v1) == 95 and v1["Freddy Krueger"].unsafe_prompt.startswith(v1["Freddy Krueger"].role_prompt)
    desc = load_profiles(SHARED_DATA / "profiles" / "role_descriptions.json")
    assert desc["Freddy Krueger"].unsafe_prompt.endswith(GENERIC_UNSAFE_INSTRUCTION)
    ours = parse_profiles([{"name": "A", "profile": "You are A."}])
    assert ours["A"].unsafe_prompt == "You are A. " + GENERIC_UNSAFE_INSTRUCTION


def test_generic_csv_with_column_mapping(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("q,a,who\nHello?,Hi there.,Bob\nBye?,See you.,Bob\n", encoding="utf-8")
    samples = load_samples(path, role="bob", columns={"input": "q", "output": "a", "role": "who"})
    assert [s.input for s in samples] == ["Hello?", "Bye?"] and samples[0].role == "Bob"


def test_per_role_json_list(tmp_path):
    path = tmp_path / "role.json"
    path.write_text(json.dumps([{"input": "x", "output": "y"}]), encoding="utf-8")
    assert load_samples(path, role="Anyone")[0].role == "Anyone"


@pytest.mark.parametrize(
    "content, suffix, expected",
    [
        ('{"input": "a", "output": "b"}\n{"input": "c", "output"\n', ".jsonl", "line 2"),
        ("", ".jsonl", "no samples"),
        ('{"foo": "a"}\n', ".jsonl", "no column for input, output"),
        ("[1, 2]", ".json", "item 0"),
        ("x,y\n1,2\n", ".txt", "unsupported file type"),
    ],
)
def test_malformed_files_give_one_clear_error(tmp_path, content, suffix, expected):
    path = tmp_path / f"bad{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SarftError) as err:
        load_samples(path)
    assert expected in str(err.value) and err.value.fix


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"input": "caf\xe9", "output": "x"}\n'.encode("latin-1"))
    with pytest.raises(SarftError, match="UTF-8"):
        load_samples(path)


# ---- one reader for every data table (samples, evaluation prompt files, result tables) ----------

@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_the_one_table_reader_reads_every_format_alike(tmp_path, suffix):
    import pandas as pd

    from sarft_core.evaluation.datasets import load_prompt_file
    from sarft_core.store import read_table, write_table

    rows = [{"input": "q1", "output": "a1"}, {"input": "q2, with a comma", "output": "a2 \"quoted\""}]
    path = tmp_path / f"t{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        write_table(pd.DataFrame(rows), path)
    assert read_table(path, records=True) == rows
    assert read_table(path).to_dict("records") == rows
    assert [(s.input, s.output) for s in load_samples(path, role="Anyone")] == [(r["input"], r["output"]) for r in rows]
    assert [i.prompt for i in load_prompt_file(path, prompt_col="input")] == ["q1", "q2, with a comma"]


def test_the_one_table_reader_keeps_csv_text_as_written_and_names_each_problem(tmp_path):
    from sarft_core.evaluation.datasets import load_prompt_file
    from sarft_core.store import read_table

    path = tmp_path / "ids.csv"
    path.write_text("id,input\n007,hi\n", encoding="utf-8-sig")  # a BOM, and an id that is text
    assert read_table(path, records=True) == [{"id": "007", "input": "hi"}]
    cases = {
        "short.csv": ('a,b\n1\n', "row 1 has fewer fields than the header"),
        "long.csv": ('a,b\n1,2,3\n', "row 1 has more fields than the header"),
        "torn.jsonl": ('{"a": 1}\n{"a"\n', "line 2 is not valid JSON"),
        "list.jsonl": ('[1]\n', "line 1 holds a list, not a JSON object"),
        "obj.json": ('{"a": 1}', "expected a JSON list of objects"),
        "bad.json": ('[{"a": 1},', "not valid JSON"),
        "bad.txt": ("a\n", "unsupported file type .txt"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        for read in (lambda p: read_table(p, records=True), load_prompt_file):
            with pytest.raises(SarftError, match=re.escape(message)) as err:
                read(tmp_path / name)
            assert err.value.fix
    with pytest.raises(SarftError, match="prompt file does not exist"):
        load_prompt_file(tmp_path / "none.csv")
    with pytest.raises(SarftError, match="could not be read as parquet"):
        (tmp_path / "bad.parquet").write_bytes(b"not parquet")
        read_table(tmp_path / "bad.parquet")


def test_one_slug_keeps_the_names_already_on_disk():
    """Every file-name slug is store.slug; the names resumable work depends on are unchanged."""
    from sarft_core.reproduce import cell_name
    from sarft_core.store import slug
    from sarft_core.survey import legacy_role_slug, role_slug

    assert slug("Dr. Hannibal Lecter / v2") == "Dr.-Hannibal-Lecter-v2"
    assert slug("!!!") == "run" and len(slug("x" * 100)) == 60
    assert slug("/models/" + "m" * 50, limit=-40, default="model") == "m" * 40
    assert legacy_role_slug("Dr. Hannibal Lecter") == "Dr._Hannibal_Lecter" and legacy_role_slug("💀") == "role"
    assert role_slug("Dr. Hannibal Lecter").startswith("Dr._Hannibal_Lecter-")
    assert cell_name("Dr. Hannibal Lecter", "sft", 0).startswith("dr-hannibal-lecter-")
    assert cell_name("Dr. Hannibal Lecter", "sft", 0).endswith("--sft-s0")
