"""Issue 31 (part A): stale caches, damaged state, mismatched weights and late validation.

Each test is a failure a probe found, replayed on real files (the tiny random Llama, real run
folders): the outcome is one SarftError (CLI: exit 2, no traceback) naming the problem and the
fix, and nothing already on disk is changed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sarft_core.cli import main
from sarft_core.errors import SarftError

from tests.conftest import SHARED_DATA

ROLE = "Baron Vex Morrow"
needs_data = pytest.mark.skipif(not (SHARED_DATA / "rolebench").is_dir(), reason="needs ../shared/data")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


# ---- 1. one model loader that trusts nothing -------------------------------------------------

def _damaged_copy(src: Path, dest: Path, config_edit=None, drop=()) -> Path:
    """A copy of the tiny model with its config.json edited and some tensors removed from its weights."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    if config_edit:
        config = json.loads((dest / "config.json").read_text())
        config.update(config_edit)
        (dest / "config.json").write_text(json.dumps(config))
    if drop:
        weights = dest / "model.safetensors"
        tensors = {k: v for k, v in load_file(weights).items() if k not in drop}
        save_file(tensors, weights, metadata={"format": "pt"})
    return dest


def test_an_untied_config_without_an_lm_head_is_refused_not_filled_at_random(tiny_model_dir, tmp_path, capsys):
    from sarft_core.models import load_model

    # the tiny model ties its head to the embeddings, so its file holds no lm_head: untying it in
    # config.json asks for a head the file does not have
    model = _damaged_copy(tiny_model_dir, tmp_path / "untied", {"tie_word_embeddings": False})
    with pytest.raises(SarftError) as err:
        load_model(str(model), dtype="float32", device="cpu")
    assert "lm_head.weight" in err.value.problem and "missing" in err.value.problem
    assert str(model) in err.value.problem and "model.safetensors" in err.value.problem and err.value.fix
    code, _, err_text = cli(capsys, "score", "--role", ROLE, "--model", model, "--limit", "1", "--out", tmp_path / "s.jsonl")
    assert code == 2 and "lm_head.weight" in err_text
    assert not (tmp_path / "s.jsonl").exists()


def test_weights_for_more_layers_than_the_config_says_are_refused(tiny_model_dir, tmp_path, capsys):
    model = _damaged_copy(tiny_model_dir, tmp_path / "short", {"num_hidden_layers": 1})
    code, _, err = cli(capsys, "score", "--role", ROLE, "--model", model, "--limit", "1", "--out", tmp_path / "s.jsonl")
    assert code == 2 and "no place for" in err and "model.layers.1." in err


def test_a_missing_layer_tensor_and_a_shape_mismatch_are_refused(tiny_model_dir, tmp_path):
    from sarft_core.models import load_model

    holed = _damaged_copy(tiny_model_dir, tmp_path / "holed", drop=("model.layers.0.mlp.up_proj.weight",))
    with pytest.raises(SarftError, match=r"missing.*model\.layers\.0\.mlp\.up_proj\.weight"):
        load_model(str(holed), dtype="float32", device="cpu")
    config = json.loads((tiny_model_dir / "config.json").read_text())
    reshaped = _damaged_copy(tiny_model_dir, tmp_path / "reshaped", {"intermediate_size": config["intermediate_size"] // 2})
    with pytest.raises(SarftError, match=r"shape differs.*mlp\.\w+_proj\.weight \(file \["):
        load_model(str(reshaped), dtype="float32", device="cpu")


def test_sound_models_still_load_tied_untied_and_trained(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from sarft_core.models import load_model

    assert load_model(str(tiny_model_dir), dtype="float32", device="cpu").model is not None  # tied: no lm_head in the file
    untied = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    untied.config.tie_word_embeddings = False
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    untied.save_pretrained(tmp_path / "untied", safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, tmp_path / "untied" / name)
    lm = load_model(str(tmp_path / "untied"), dtype="float32", device="cpu")
    assert torch.equal(lm.model.lm_head.weight, untied.lm_head.weight)
