"""Chat encoding and data loaders: formats, validation, clear errors."""
import json

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
