"""Sample ids are stable (issue 31, part C): overrides, reviews and side files name samples by id,
so a skipped row must never hand its id to the next one, and a clash names the rows involved."""
from __future__ import annotations

import json

import pytest

from sarft_core.data import DEMO_SAMPLES, load_samples
from sarft_core.errors import SarftError

ROLE = "Baron Vex Morrow"


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(answers, role=ROLE, ids=None):
    return [{"role": role, "input": f"question {i}", "output": a, **({"id": ids[i]} if ids else {})} for i, a in enumerate(answers)]


def _by_input(samples):
    return {s.input: s.id for s in samples}


@pytest.mark.parametrize("blank", ["", "   \n"])
def test_a_skipped_row_keeps_its_id_to_itself(tmp_path, blank):
    full = load_samples(_jsonl(tmp_path / "full.jsonl", _rows(["a", "b", "c", "d"])), role=ROLE)
    gap = load_samples(_jsonl(tmp_path / "gap.jsonl", _rows(["a", blank, "c", "d"])), role=ROLE)
    assert [s.input for s in gap] == ["question 0", "question 2", "question 3"]
    for s in gap:  # every sample keeps the id it has when no row is skipped
        assert s.id == _by_input(full)[s.input]
    assert "00001" not in {s.id for s in gap}


def test_blank_rows_of_the_role_do_not_shift_ids_in_a_file_of_many_roles(tmp_path):
    rows = (_rows(["x", "y"], role="Other") + _rows(["a", "", "c"]) + _rows(["z"], role="Other") + _rows(["d"]))
    samples = load_samples(_jsonl(tmp_path / "many.jsonl", rows), role=ROLE)
    assert [(s.output, s.id) for s in samples] == [("a", "00000"), ("c", "00002"), ("d", "00003")]


def test_ids_of_files_without_skipped_rows_are_unchanged():
    samples = load_samples(DEMO_SAMPLES, role=ROLE)
    assert [s.id for s in samples] == [f"{i:05d}" for i in range(len(samples))]


def test_a_csv_with_a_blank_answer_keeps_the_other_ids(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("input,output\nq0,a0\nq1,\nq2,a2\n")
    assert [(s.input, s.id) for s in load_samples(path)] == [("q0", "00000"), ("q2", "00002")]


def test_a_null_id_clashing_with_a_given_id_names_the_row_without_id(tmp_path):
    path = _jsonl(tmp_path / "ids.jsonl", _rows(["a", "b"], ids=["00001", None]))
    with pytest.raises(SarftError) as err:
        load_samples(path, role=ROLE)
    text = str(err.value)
    assert "row 2 has no id" in text and "'00001'" in text and "row 1" in text
    assert "duplicate sample ids" not in text
    assert "give row 2 an id" in err.value.fix


def test_null_ids_beside_other_given_ids_take_their_position(tmp_path):
    path = _jsonl(tmp_path / "ids.jsonl", _rows(["a", "b", "c"], ids=["alpha", None, "gamma"]))
    assert [s.id for s in load_samples(path, role=ROLE)] == ["alpha", "00001", "gamma"]


def test_true_duplicates_name_the_id_and_both_rows(tmp_path):
    path = _jsonl(tmp_path / "dup.jsonl", _rows(["a", "b", "c"], ids=["s1", "s2", "s1"]))
    with pytest.raises(SarftError, match=r"sample id 's1' is used by rows 1 and 3") as err:
        load_samples(path, role=ROLE)
    assert "unique" in err.value.fix


def test_parquet_integer_ids_with_a_gap_stay_integers(tmp_path):
    import pandas as pd

    path = tmp_path / "d.parquet"
    pd.DataFrame({"input": ["q0", "q1", "q2"], "output": ["a0", "a1", "a2"], "id": [7.0, None, 9.0]}).to_parquet(path)
    assert [s.id for s in load_samples(path)] == ["7", "00001", "9"]
