"""Resource limits: too little memory fails early with the limit named; a full disk is reported and
leaves the previous state intact."""
from __future__ import annotations

import errno
import os

import pandas as pd
import pytest

from sarft_core import resources
from sarft_core.errors import SarftError
from sarft_core.store import RunDir, append_jsonl, atomic_write_json, create_run, read_jsonl, write_table


def test_host_memory_and_cgroup_are_read(tmp_path, monkeypatch):
    import psutil

    avail = resources._host_available()
    assert 0 < avail <= psutil.virtual_memory().total
    monkeypatch.delenv("SARFT_MEMORY_LIMIT", raising=False)
    assert resources.free_memory().bytes <= avail * 1.05  # the tightest limit, never above the host's
    (tmp_path / "memory.max").write_text("1000000\n")
    (tmp_path / "memory.current").write_text("400000\n")
    assert resources._cgroup_available(str(tmp_path)) == 600000
    (tmp_path / "memory.max").write_text("max\n")
    assert resources._cgroup_available(str(tmp_path)) is None


def test_memory_limit_parsing(monkeypatch):
    assert resources.parse_size("8G") == 8 * 2**30 and resources.parse_size("512 MiB") == 512 * 2**20 and resources.parse_size("100") == 100
    with pytest.raises(SarftError, match="not a size"):
        resources.parse_size("lots")
    monkeypatch.setenv("SARFT_MEMORY_LIMIT", "1M")
    free = resources.free_memory()
    assert free.bytes == 2**20 and free.source == "$SARFT_MEMORY_LIMIT"


def test_estimate_grows_with_the_batch_and_fits_defaults(embedded_dir):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(embedded_dir)
    small = resources.forward_bytes(cfg, 6, 640, 640, 4, 1024)
    big = resources.forward_bytes(cfg, 64, 640, 640, 4, 1024)
    assert 0 < small < big
    assert small < 2 * 2**30  # the default --batch-tokens 4096 on the embedded model stays near 1 GiB


def test_scoring_too_large_for_memory_fails_early_naming_the_limit(tmp_path, tiny_model_dir, score_cache, monkeypatch, capsys):
    from sarft_core.cli import main

    monkeypatch.setenv("SARFT_MEMORY_LIMIT", "1M")
    out = tmp_path / "s.parquet"
    code = main(["score", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "needs about" in err and "$SARFT_MEMORY_LIMIT" in err and "--batch-tokens" in err and "--limit" in err
    assert not out.exists() and not list(score_cache.glob("scores/*/records*.jsonl"))  # failed before any work
    monkeypatch.setenv("SARFT_MEMORY_LIMIT", "64G")
    assert main(["score", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "4", "--out", str(out)]) == 0


def test_generation_too_large_for_memory_fails_early(tiny_lm, monkeypatch):
    from sarft_core.evaluation.generation import GenerationConfig, generate

    monkeypatch.setenv("SARFT_MEMORY_LIMIT", "256K")
    with pytest.raises(SarftError, match=r"generating .* \$SARFT_MEMORY_LIMIT") as info:
        generate(tiny_lm, ["How do I bake bread?"] * 4, GenerationConfig(max_new_tokens=4, batch_size=4))
    assert "--batch-size" in str(info.value)
    monkeypatch.delenv("SARFT_MEMORY_LIMIT")
    assert len(generate(tiny_lm, ["Hi"], GenerationConfig(max_new_tokens=2))) == 1


# --- disk full ---------------------------------------------------------------------------------

def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_keeps_the_previous_file_and_leaves_no_temporaries(tmp_path, monkeypatch):
    df = pd.DataFrame({"id": ["a", "b"], "score": [1.0, 2.0]})
    for name in ("t.parquet", "t.jsonl", "t.csv"):
        path = tmp_path / name
        write_table(df, path)
        before = path.read_bytes()
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", _enospc)
            with pytest.raises(SarftError, match="No space left on device") as info:
                write_table(df.assign(score=[9.0, 9.0]), path)
        assert "previous file is unchanged" in str(info.value)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.jsonl", "t.parquet"]


def test_disk_full_on_status_and_logs_keeps_the_run_readable(tmp_path, monkeypatch):
    run = create_run("score", {"role": "r"}, path=tmp_path / "run")
    run.set_status("running", step=3)
    run.log(step=1)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", _enospc)
        with pytest.raises(SarftError, match="No space left"):
            run.set_status("completed")
    assert run.status()["state"] == "running" and run.status()["step"] == 3  # never shown complete
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _enospc)
        with pytest.raises(SarftError, match="could not append"):
            run.log(step=2)  # was a raw OSError
    assert [e["step"] for e in run.logs()][0] == 1
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


def test_disk_full_during_scoring_exits_2_and_keeps_the_previous_scores(tmp_path, tiny_model_dir, score_cache, monkeypatch, capsys):
    from sarft_core.cli import main

    out = tmp_path / "s.parquet"
    args = ["score", "--role", "Baron Vex Morrow", "--model", str(tiny_model_dir), "--limit", "3", "--out", str(out)]
    assert main(args) == 0
    before = out.read_bytes()
    monkeypatch.setattr(os, "fsync", _enospc)
    code = main(args[:-4] + ["--limit", "5", "--out", str(out)])  # new samples: the score cache must be appended
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert out.read_bytes() == before


def test_torn_last_line_does_not_swallow_the_next_record(tmp_path):
    path = tmp_path / "records.jsonl"
    append_jsonl(path, {"key": "a"})
    with open(path, "ab") as fh:
        fh.write(b'{"key": "b", "val')  # a crash in the middle of a write
    assert [r["key"] for r in read_jsonl(path)] == ["a"]
    append_jsonl(path, {"key": "c"})  # before the fix this line was glued to the torn one and lost
    assert [r["key"] for r in read_jsonl(path)] == ["a", "c"]


def test_unreadable_status_is_never_complete(tmp_path):
    run = create_run("train", {}, path=tmp_path / "r")
    run.status_path.write_bytes(b'{"state": "compl')
    assert run.status()["state"] == "failed" and not run.is_complete
    atomic_write_json(run.status_path, ["completed"])
    assert not RunDir(run.path).is_complete
