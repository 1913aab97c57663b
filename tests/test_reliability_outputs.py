"""Issue 31 (part A): mismatched weights, output folders of another kind, grid state and labels.

Each test is a failure a probe found, replayed on real files (the tiny random Llama, real run
folders): the outcome is one SarftError (CLI: exit 2, no traceback) naming the problem and the
fix, and nothing already on disk is changed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sarft_core.errors import SarftError

from tests.conftest import SHARED_DATA
from tests.test_hostile import cli  # the probe tests' one CLI runner: exit code, output, no traceback

ROLE = "Baron Vex Morrow"
needs_data = pytest.mark.skipif(not (SHARED_DATA / "rolebench").is_dir(), reason="needs ../shared/data")
pytestmark = pytest.mark.usefixtures("one_torch_thread")



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


# ---- 2. one claim on an output folder for every command --------------------------------------

GRID = ("--villains", "Freddy Krueger", "--benevolent", "", "--methods", "sft", "--seeds", "0")


def _finished_runs(tmp_path: Path) -> dict[str, Path]:
    """A completed training run (with weights) and an evaluation folder, as the commands leave them."""
    from sarft_core.store import create_run

    train = create_run("train", {"model": "x", "method": "sft", "role": ROLE}, path=tmp_path / "train")
    (train.artifacts / "adapter").mkdir()
    train.set_status("completed")
    evaluation = create_run("eval", {"model": "x"}, path=tmp_path / "eval")
    evaluation.set_status("completed")
    return {"train": train.path, "eval": evaluation.path}


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_reproduce_never_writes_over_a_training_run_or_an_evaluation(tmp_path, tiny_model_dir, capsys):
    from sarft_core.models import load_model

    for kind, folder in _finished_runs(tmp_path).items():
        before = _snapshot(folder)
        code, _, err = cli(capsys, "reproduce", "--out", folder, *GRID, "--model", tiny_model_dir, "--aggregate-only")
        assert code == 2 and f"holds a{'n' if kind == 'eval' else ''} {kind} run, not a reproduction grid" in err, err
        assert _snapshot(folder) == before  # config.json still says what ran: the run stays loadable
    with pytest.raises(SarftError, match="holds a train run, not a reproduce run"):
        from sarft_core.store import create_run

        create_run("reproduce", {}, path=tmp_path / "train")  # the library's one writer refuses too
    with pytest.raises(SarftError, match="model path does not exist: x"):  # still read as a training run (of base model x)
        load_model(str(tmp_path / "train"), dtype="float32", device="cpu")


def test_every_command_refuses_a_folder_of_another_kind_or_of_other_files(tmp_path, tiny_model_dir, capsys):
    runs = _finished_runs(tmp_path)
    before = _snapshot(runs["eval"])
    code, _, err = cli(capsys, "train", "--role", ROLE, "--model", tiny_model_dir, "--out", runs["eval"])
    assert code == 2 and "holds an eval run, not a training run" in err
    assert _snapshot(runs["eval"]) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    for argv in (("train", "--role", ROLE, "--model", tiny_model_dir), ("reproduce", *GRID, "--model", tiny_model_dir),
                 ("eval", "--model", tiny_model_dir, "--suite", "probes", "--limit", "1")):
        code, _, err = cli(capsys, *argv, "--out", mine)
        assert code == 2 and "holds files that are not" in err and "thesis.tex" in err, (argv[0], err)
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
def test_reproduce_and_align_refuse_an_unusable_out_before_any_work(tmp_path, tiny_model_dir, capsys, where):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    out = {"file": a_file, "under_file": a_file / "grid", "proc": Path("/proc/sarft-no-such/grid")}[where]
    for argv in (("reproduce", *GRID, "--model", tiny_model_dir), ("align", "--model", tiny_model_dir, "--data-dir", SHARED_DATA)):
        if argv[0] == "align" and not (SHARED_DATA / "safety").is_dir():
            continue
        code, _, err = cli(capsys, *argv, "--out", out)
        assert code == 2 and "error:" in err and "fix:" in err, (argv[0], err)
        assert ("is a file" in err) if where != "proc" else ("could not create" in err), (argv[0], err)
    assert a_file.read_text() == "x"


def test_align_may_write_only_into_its_own_folder(tmp_path):
    from sarft_core.alignment import AlignConfig, align_output_names, data_paths
    from sarft_core.data import ALIGN_DIR
    from sarft_core.store import claim_output_dir

    if not (SHARED_DATA / "safety").is_dir():
        pytest.skip("needs ../shared/data")
    paths = data_paths(AlignConfig(), SHARED_DATA)
    # the shipped folder holds the adapter, its manifest and the data alignment reads: all its own
    assert {p.name for p in ALIGN_DIR.iterdir()} <= align_output_names(ALIGN_DIR, paths)
    earlier = tmp_path / "earlier"
    (earlier / "adapter").mkdir(parents=True)
    (earlier / "manifest.json").write_text("{}")
    assert claim_output_dir(earlier, None, "alignment output", own=align_output_names(earlier, paths)) == earlier
    runs = _finished_runs(tmp_path)
    with pytest.raises(SarftError, match="holds a train run, not an alignment output"):
        claim_output_dir(runs["train"], None, "alignment output", own=align_output_names(runs["train"], paths))


# ---- 3. the reproduction grid's state ------------------------------------------------------

def _grid(capsys, out, *extra) -> tuple[int, str]:
    code, _, err = cli(capsys, "reproduce", "--out", out, *GRID, "--aggregate-only", *extra)
    return code, err


def _data_copy(dest: Path, damage: bool = False) -> Path:
    """The files a grid reads, copied to another folder (``damage``: one evaluation prompt edited)."""
    for rel in ("rolebench/instruction-generalization/role_specific/test.jsonl",
                "rolebench/instruction-generalization/role_specific/rolegpt_baseline.jsonl",
                "profiles/role_prompts.json", "safety/advbench_harmful_behaviors.csv", "safety/xstest_prompts.csv"):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHARED_DATA / rel, dest / rel)
    if damage:
        xstest = dest / "safety" / "xstest_prompts.csv"
        xstest.write_text(xstest.read_text().replace("kill", "stop", 1))
    return dest


@needs_data
def test_a_damaged_grid_config_is_one_message_naming_the_file(tmp_path, capsys):
    from sarft_core.gridview import grid_view

    out = tmp_path / "grid"
    assert _grid(capsys, out)[0] == 0
    (out / "config.json").write_text('{"kind": "reproduce", "villains": ["Freddy')  # torn by hand or a disk fault
    code, err = _grid(capsys, out)
    assert code == 2 and f"{out / 'config.json'} is damaged" in err and "fix:" in err
    assert (out / "config.json").read_text().endswith('["Freddy')
    with pytest.raises(SarftError, match="config.json is damaged"):
        grid_view(out)


@needs_data
def test_a_grid_resumes_on_the_same_content_and_refuses_other_content(tmp_path, capsys):
    out = tmp_path / "grid"
    assert _grid(capsys, out, "--data-dir", _data_copy(tmp_path / "a"))[0] == 0
    recorded = json.loads((out / "config.json").read_text())["inputs"]
    assert set(recorded) >= {"data file 1", "data file 2", "profiles", "panel's advbench file", "panel's xstest file"}
    code, err = _grid(capsys, out, "--data-dir", _data_copy(tmp_path / "b"))
    assert code == 0, err  # the same files at another path: the same grid
    code, err = _grid(capsys, out, "--data-dir", _data_copy(tmp_path / "c", damage=True))
    assert code == 2 and "panel's xstest file changed content" in err
    assert json.loads((out / "config.json").read_text())["inputs"] == recorded


@needs_data
@pytest.mark.parametrize("option, value, named", [
    ("--train-json", {"lr": 5}, "--lr"), ("--train-json", {"epochs": 0}, "--epochs"),
    ("--train-json", {"method": "sft"}, "unknown key"), ("--train-json", {"peft": "qlora"}, "--peft"),
    ("--panel-json", {"max_new_tokens": 0}, "max_new_tokens"), ("--panel-json", {"dtype": "fp8"}, "dtype"),
    ("--panel-json", {"judge": "oracle"}, "judge"), ("--panel-json", {"advbench": "all"}, "advbench"),
])
def test_grid_settings_are_checked_as_the_commands_they_configure_before_any_side_effect(tmp_path, capsys, option, value, named):
    out = tmp_path / "grid"
    code, err = _grid(capsys, out, option, json.dumps(value))
    assert code == 2 and option in err and named in err, err
    assert not out.exists()


# ---- 4. labels that say what ran ------------------------------------------------------------

def test_the_default_model_is_recorded_as_embedded_aligned_with_its_fingerprint(tmp_path, capsys):
    """An evaluation with no --model used embedded-aligned's weights; it recorded "model": "embedded"
    (raw SmolLM2 everywhere else). Config, metrics and the views now name what ran."""
    from sarft_core.models import model_identity
    from sarft_core.report import settings
    from sarft_core.runconfig import RunConfig
    from sarft_core.runview import runs_table
    from sarft_core.store import RunDir

    label, fingerprint = model_identity(None)
    assert label == "embedded-aligned" and fingerprint.startswith("embedded-aligned-")
    assert model_identity("embedded")[0] == "embedded:smollm2-135m-instruct"
    out = tmp_path / "ev"
    code, _, err = cli(capsys, "eval", "--suite", "probes", "--limit", "1", "--judge", "keyword", "--max-new-tokens", "2",
                       "--data-dir", SHARED_DATA, "--out", out)
    assert code == 0, err
    recorded = RunConfig.read(out)
    assert (recorded.model, recorded.model_fingerprint) == (label, fingerprint)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == label
    assert runs_table([RunDir(out)]).iloc[0]["model"] == label
    assert ("model", label) in settings(RunDir(out)) and ("model_fingerprint", fingerprint) in settings(RunDir(out))


def test_train_and_score_runs_record_the_resolved_model_and_its_fingerprint(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from sarft_core import audit
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles
    from sarft_core.models import model_identity
    from sarft_core.runconfig import RunConfig

    label, fingerprint = model_identity(str(tiny_model_dir))
    monkeypatch.setenv("SARFT_WORKSPACE", str(tmp_path / "ws"))
    run = audit.create_score_run(get_profile(load_profiles(DEMO_PROFILES), ROLE), None, str(tiny_model_dir), limit=2)
    code, _, err = cli(capsys, *audit.score_args(run))
    assert code == 0, err
    assert (RunConfig.of(run).model, RunConfig.of(run).model_fingerprint) == (label, fingerprint)
    out = tmp_path / "train"
    code, _, err = cli(capsys, "train", "--role", ROLE, "--model", tiny_model_dir, "--method", "sft", "--limit", "4",
                       "--batch-size", "4", "--grad-accum", "1", "--max-steps", "1", "--out", out)
    assert code == 0, err
    recorded = RunConfig.read(out)
    assert (recorded.model, recorded.model_fingerprint) == (label, fingerprint)
    assert recorded.train.model == str(tiny_model_dir)  # the options as given stay, for --resume


def test_an_adapter_missing_weights_or_holding_foreign_ones_is_refused(tiny_model_dir, tmp_path):
    """PEFT only warns when an adapter file lacks weights its config asks for (LoRA's B then stays
    at zero: a silently partial adapter); the one loader refuses it, naming the file and the keys."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from sarft_core.models import checked_adapter

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    fresh = lambda: AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))  # noqa: E731
    assert checked_adapter(fresh(), adapter) is not None  # whole: loads
    dropped = sorted(k for k in weights if "lora_B" in k)[0]
    save_file({k: v for k, v in weights.items() if k != dropped}, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(SarftError, match="missing") as err:
        checked_adapter(fresh(), adapter)
    assert dropped in str(err.value) and "adapter_model.safetensors" in str(err.value)
    extra = dict(weights, **{"base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": next(iter(weights.values())).clone()})
    save_file(extra, str(adapter / "adapter_model.safetensors"))
    with pytest.raises(SarftError, match="no place in the model"):
        checked_adapter(fresh(), adapter)
