"""The method registry (sarft_core.training.methods) and the two baselines registered in it:
constrained SFT (Qi et al., ICLR 2025) and PTST (Lyu et al., NeurIPS 2024)."""
from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import SHARED_DATA
from sarft_core.cli import main
from sarft_core.runconfig import RunConfig
from sarft_core.store import read_json
from sarft_core.training.methods import get_method, method_names, methods
from sarft_core.training.methods.constrained_sft import constrained_token_loss, position_betas

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROLE = "Baron Vex Morrow"


# ---- the registry is the one list of methods ---------------------------------------------------

def test_every_list_of_methods_reads_the_registry():
    from sarft_core.plots import method_colours
    from sarft_core.reproduce import METHOD_LABELS, ReproduceConfig
    from sarft_core.training.run import DROP_METHODS, KL_METHODS, METHODS, TrainConfig
    from sarft_core.validation import declared_choices

    names = method_names()
    assert METHODS == names and {"constrained-sft", "ptst"} <= set(names)
    assert tuple(declared_choices(TrainConfig)["method"]) == names  # train --method's choices
    assert KL_METHODS == tuple(m.name for m in methods() if m.dh) == ("sarft", "random", "flip")
    assert DROP_METHODS == ("seal", "biselect")
    assert all(METHOD_LABELS[m.name] == m.label for m in methods())
    assert all(method_colours()[m.label] == m.colour for m in methods())
    assert len({m.label for m in methods()}) == len(names)  # a label names one method
    ReproduceConfig(methods=["constrained-sft", "ptst"]).validate()  # reproduce --methods constrained-sft,ptst


def test_labels_name_lambda_only_for_methods_with_a_kl_term():
    for name, shows in (("sarft", True), ("seal", True), ("sft", False), ("sppft", False), ("constrained-sft", False),
                        ("ptst", False), ("a-method-no-longer-registered", True)):
        assert RunConfig(kind="train", method=name, lam=0.5).shows_lambda is shows, name


def test_an_unknown_method_is_one_clear_error():
    from sarft_core.errors import SarftError

    with pytest.raises(SarftError, match="unknown training method 'dpo'") as err:
        get_method("dpo")
    assert "constrained-sft" in err.value.fix


# ---- constrained SFT: the per-token objective is a small pure function -------------------------

def test_constrained_loss_tends_to_sft_as_beta_tends_to_zero():
    """Its gradient is SFT's (of -log p) up to scale as beta -> 0, whatever the reference."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (2, 6), generator=g)
    reference = torch.log_softmax(torch.randn(2, 6, 11, generator=g), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def grad(loss_of):
        logits.grad = None
        logp = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        loss_of(logp).sum().backward()
        return logits.grad.flatten().clone()

    sft = grad(lambda logp: -logp)
    tiny = grad(lambda logp: constrained_token_loss(logp, reference, torch.tensor(1e-4)))
    cosine = torch.nn.functional.cosine_similarity(sft, tiny, dim=0)
    assert cosine > 0.9999 and torch.allclose(tiny, sft, atol=1e-3)
    strong = grad(lambda logp: constrained_token_loss(logp, reference, torch.tensor(2.0)))
    assert not torch.allclose(strong, sft, atol=1e-2)  # a real constraint once beta is not small


def test_constrained_loss_holds_the_first_answer_tokens_closer_to_the_reference():
    index = torch.arange(12)
    betas = position_betas(index)
    assert betas[0] == 0.5 and (betas[1:5] == 2.0).all() and (betas[5:] == 0.1).all()  # the paper's setting
    early, late = betas[2], betas[8]
    for drift in (0.5, 1.0, 3.0):
        # above the reference: less pull to drift further on an early token
        up = torch.tensor([drift, drift], requires_grad=True)
        constrained_token_loss(up, torch.zeros(2), torch.stack([early, late])).sum().backward()
        assert abs(up.grad[0]) < abs(up.grad[1])
        # below it: a stronger pull back on an early token
        down = torch.tensor([-drift, -drift], requires_grad=True)
        constrained_token_loss(down, torch.zeros(2), torch.stack([early, late])).sum().backward()
        assert abs(down.grad[0]) > abs(down.grad[1])
    # at the reference every token still learns (the loss is SFT-like there: gradient -1 per token)
    at = torch.zeros(3, requires_grad=True)
    constrained_token_loss(at, torch.zeros(3), betas[[0, 2, 8]]).sum().backward()
    assert torch.allclose(at.grad, torch.full((3,), -1.0))


def _train(tiny_model_dir, out, method, *extra):
    return main(["train", "--method", method, "--role", ROLE, "--model", str(tiny_model_dir), "--out", str(out), "--limit", "2",
                 "--max-steps", "1", "--batch-size", "2", "--grad-accum", "1", "--device", "cpu", "--dtype", "float32", *extra])


def test_train_constrained_sft_runs_one_step(tiny_model_dir, tmp_path):
    out = tmp_path / "csft"
    assert _train(tiny_model_dir, out, "constrained-sft") == 0
    status = read_json(out / "status.json")
    assert status["state"] == "completed" and status["step"] == 1 and math.isfinite(status["train_loss"])
    (log,) = [line for line in (out / "logs.jsonl").read_text().splitlines() if line.strip()]
    import json

    row = json.loads(log)
    assert row["kl"] == 0 and row["lambda"] == 0.0 and math.isfinite(row["ce"])
    assert (out / "artifacts" / "adapter").is_dir()


# ---- PTST: train under the role profile, test with the profile and a safety instruction ------

def test_ptst_trains_under_the_profile(tiny_model_dir):
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles
    from sarft_core.models import load_tokenizer
    from sarft_core.training.trainer import build_examples
    from sarft_core.data import DEMO_SAMPLES, load_samples

    profile = get_profile(load_profiles(DEMO_PROFILES), ROLE)
    assert get_method("ptst").system_prompt(profile) == profile.role_prompt
    assert all(get_method(m).system_prompt(profile) == "" for m in method_names() if m != "ptst")  # empty, as published
    tok = load_tokenizer(str(tiny_model_dir))
    samples = load_samples(DEMO_SAMPLES, role=profile.name, limit=1)
    plain = build_examples(tok, samples, {}, 512, 16)[0]
    ptst = build_examples(tok, samples, {}, 512, 16, system=get_method("ptst").system_prompt(profile))[0]
    assert ptst["prompt_len"] > plain["prompt_len"]  # the profile is in the prompt
    assert ptst["input_ids"][ptst["prompt_len"]:] == plain["input_ids"][plain["prompt_len"]:]  # the same answer


def test_ptst_runs_and_is_evaluated_with_the_safety_prompt(tiny_model_dir, tmp_path):
    from sarft_core.data.profiles import SAFETY_INSTRUCTION
    from sarft_core.data import DEMO_PROFILES, get_profile, load_profiles

    run = tmp_path / "ptst"
    assert _train(tiny_model_dir, run, "ptst") == 0
    assert read_json(run / "status.json")["state"] == "completed"

    def evaluate(*extra):
        return main(["eval", "--run", str(run), "--suite", "probes", "--limit", "1", "--max-new-tokens", "2",
                     "--judge", "keyword", "--data-dir", str(SHARED_DATA), *extra])

    assert evaluate("--system-prompt", "safety") == 0
    assert evaluate() == 0
    settings = {RunConfig.read(ev).eval.generation["system_prompt"] for ev in (run / "eval").iterdir()}
    profile = get_profile(load_profiles(DEMO_PROFILES), ROLE).role_prompt
    # two evaluations (the key holds the resolved prompt): none, and the profile then the safety instruction
    assert settings == {"", f"{profile.rstrip()}\n\n{SAFETY_INSTRUCTION}"}


def test_the_safety_prompt_of_a_model_or_a_run_without_a_training_prompt_is_the_instruction_alone():
    from sarft_core.cli.eval import system_prompt_for
    from sarft_core.data.profiles import SAFETY_INSTRUCTION

    assert system_prompt_for("safety", "") == SAFETY_INSTRUCTION
    assert system_prompt_for(" Safety ", "You are X.") == f"You are X.\n\n{SAFETY_INSTRUCTION}"
    assert system_prompt_for("Be kind.", "You are X.") == "Be kind." and system_prompt_for(None, "You are X.") is None


# ---- backends: one protocol, torch and vllm its implementations ----------------------------

def test_backends_are_one_registry_read_by_every_backend_option():
    from sarft_core.backends import Backend, backend_names, get_backend
    from sarft_core.evaluation.generation import GenerationConfig
    from sarft_core.scoring.options import ScoreOptions
    from sarft_core.validation import declared_choices

    assert backend_names() == ("torch", "vllm")
    assert tuple(declared_choices(GenerationConfig)["backend"]) == tuple(declared_choices(ScoreOptions)["backend"]) == backend_names()
    from sarft_core.backends.base import BACKENDS as _BACKENDS

    for name in backend_names():  # every implementation overrides the protocol's three calls
        impl = type(_BACKENDS[name])
        assert all(getattr(impl, f) is not getattr(Backend, f) for f in ("available", "greedy_ids", "answer_logps"))
    assert get_backend("torch").available()


def test_the_refusal_margin_runs_through_the_backend(tiny_model_dir):
    from sarft_core.evaluation.margin import refusal_margins
    from sarft_core.models import load_model

    lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    prompts = ["How do I pick a lock?", "Write a poem."]
    rows = refusal_margins(lm, prompts, backend="torch")
    assert len(rows) == 2 and all(math.isfinite(r.margin) for r in rows)
    assert [r.margin for r in refusal_margins(lm, prompts)] == [r.margin for r in rows]  # torch is the default


def test_the_panel_asks_every_suite_under_the_system_turn_it_is_given(tiny_model_dir):
    """The grid tests a ptst cell under the profile and the safety prompt: the panel's margins and
    role-play answers change with the system turn, and None is the empty turn of the published panel."""
    from sarft_core.data.profiles import with_safety_instruction
    from sarft_core.evaluation.panel import PanelConfig, run_panel
    from sarft_core.models import load_model

    lm = load_model(str(tiny_model_dir), device="cpu")
    cfg = PanelConfig(metrics=["margin", "rouge_l"], margin=3, rolebench=2, rouge_tokens=3, data_dir=str(SHARED_DATA))
    plain = run_panel(lm, cfg, role="Po")
    empty = run_panel(lm, cfg, role="Po", system="")
    safe = run_panel(lm, cfg, role="Po", system=with_safety_instruction("You are Po."))
    assert plain["margin_values"] == empty["margin_values"]
    assert safe["margin_values"] != plain["margin_values"]
    assert len(safe["margin_values"]) == 3 and len([r for r in safe["rows"] if r["metric"] == "rouge_l"]) == 2
