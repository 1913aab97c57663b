"""bench/bench_scoring.py stays runnable: on the CPU with a tiny random config, and its GPU
configuration (a random Llama-3-8B shape, bf16) is the right shape. No timing is asserted."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scoring", ROOT / "bench" / "bench_scoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runs_on_the_cpu_with_a_tiny_config(bench, tmp_path, score_cache):
    out = tmp_path / "bench.json"
    report = bench.main(["--config", "tiny", "--samples", "4", "--repeats", "1", "--json", str(out)])
    assert json.loads(out.read_text())["samples"] == 4
    m = report["machine"]
    assert m["cpu"] and isinstance(m["isa"], list) and m["plan"] in ("exact", "screen")
    assert m["peak_fp32_gflops"] > 0 and m["peak_bf16_gflops"] > 0 and m["plan_detail"]
    for key in ("two_passes", "three_passes", "fast_two_passes", "bf16_screen_two_passes"):
        row = report[key]
        assert row["flags_identical"] and row["speedup"] > 0 and 0 < row["engine_vs_peak"]
    assert report["fast_flags_identical_to_fp32"]
    assert max(report["two_passes"]["max_abs_delta"].values()) < 1e-4


def test_llama3_8b_config_has_the_published_shape(bench):
    lm = bench.build_model("llama3-8b", "meta")  # no memory: shapes only
    n = sum(p.numel() for p in lm.model.parameters())
    assert 8.0e9 < n < 8.1e9 and next(lm.model.parameters()).dtype == torch.bfloat16
    cfg = lm.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.vocab_size) == (4096, 32, 8, 128256)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the bench would run")
def test_cuda_without_a_gpu_says_so(bench):
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        bench.main(["--device", "cuda", "--config", "tiny", "--samples", "2"])
