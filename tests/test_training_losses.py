"""The RBO loss pieces, D_h selection and SPPFT layer picking: pure functions, no model."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sarft_core.errors import SarftError
from sarft_core.training import losses, selection, sppft
from sarft_core.training.methods import select_dh
from sarft_core.training.trainer import answer_targets


# ---- losses ----------------------------------------------------------------------------------

def test_token_kl_matches_definition_in_both_directions():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    p_a, p_b = F.softmax(a, -1), F.softmax(b, -1)
    ref_theta = (p_b * (p_b.log() - p_a.log())).sum(-1)  # KL(p_ref || p_theta), theta = a, ref = b
    theta_ref = (p_a * (p_a.log() - p_b.log())).sum(-1)
    assert torch.allclose(losses.token_kl(a, b), ref_theta, atol=1e-6)
    assert torch.allclose(losses.token_kl(a, b, "theta||ref"), theta_ref, atol=1e-6)
    assert not torch.allclose(ref_theta, theta_ref)
    assert torch.allclose(losses.token_kl(a, a), torch.zeros(2, 3), atol=1e-6)
    with pytest.raises(ValueError):
        losses.token_kl(a, b, "both")


def test_token_kl_gradient_reaches_policy_only():
    a = torch.randn(1, 2, 5, requires_grad=True)
    b = torch.randn(1, 2, 5, requires_grad=True)
    losses.token_kl(a, b).sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert b.grad is None


def test_kl_loss_zero_without_dh_and_divides_by_all_rows():
    empty = torch.zeros(0, 4)
    assert losses.kl_loss(empty, empty, batch_rows=4).item() == 0.0
    kl_h = torch.tensor([[1.0, 3.0, 100.0]])  # one D_h row; the third position is masked out
    mask_h = torch.tensor([[1, 1, 0]])
    assert losses.kl_loss(kl_h, mask_h, batch_rows=4).item() == pytest.approx(2.0 / 4)


def test_ce_loss_normalisations():
    token_ce = torch.tensor([[0.0, 2.0, 4.0], [1.0, 1.0, 0.0]])
    answer = torch.tensor([[0, 1, 1], [1, 1, 0]])
    # answer: mean over the 4 answer tokens
    assert losses.ce_loss(token_ce, answer).item() == pytest.approx((2 + 4 + 1 + 1) / 4)
    # published: per row answer-CE sum / non-pad tokens (prompt included), then batch mean
    nonpad = torch.tensor([3, 2])
    expected = ((6 / 3) + (2 / 2)) / 2
    assert losses.ce_loss(token_ce, answer, nonpad, "published").item() == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ValueError):
        losses.ce_loss(token_ce, answer, None, "published")
    # a part of a step: its share of the step's token mean; the parts add up to that mean
    parts = [losses.ce_loss(token_ce[i:i + 1], answer[i:i + 1], total_tokens=4).item() for i in range(2)]
    assert parts == pytest.approx([6 / 4, 2 / 4]) and sum(parts) == pytest.approx(losses.ce_loss(token_ce, answer).item())


def test_rbo_loss_combines_and_rejects_negative_lambda():
    ce, kl = torch.tensor(2.0), torch.tensor(0.5)
    assert losses.rbo_loss(ce, kl, 0.0).item() == 2.0
    assert losses.rbo_loss(ce, kl, 0.5).item() == pytest.approx(2.25)
    with pytest.raises(ValueError):
        losses.rbo_loss(ce, kl, -0.1)


def test_token_cross_entropy_ignores_masked_targets():
    logits = torch.randn(1, 3, 6)
    targets = torch.tensor([[2, losses.IGNORE_INDEX, 5]])
    ce = losses.token_cross_entropy(logits, targets)
    assert ce[0, 1].item() == 0.0
    assert ce[0, 0].item() == pytest.approx(-F.log_softmax(logits[0, 0], -1)[2].item(), rel=1e-5)


def test_answer_targets_pick_only_answer_tokens():
    # row 0: prompt 3 tokens, answer 2 (len 5); row 1: prompt 2, answer 1 (len 3), padded
    ids = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 22, 0, 0]])
    plens, lens = torch.tensor([3, 2]), torch.tensor([5, 3])
    positions = torch.arange(1, 4)  # min prompt - 1 .. max len - 2
    t = answer_targets(ids, plens, lens, positions).tolist()
    assert t == [[-100, 13, 14], [22, -100, -100]]


# ---- selection -------------------------------------------------------------------------------

ROWS = [
    {"id": "a", "logp_role": -1.0, "logp_unsafe": -0.5, "s_role": 0.2, "s_unsafe": 0.7},   # margin +0.5
    {"id": "b", "logp_role": -1.0, "logp_unsafe": -1.2, "s_role": 0.5, "s_unsafe": 0.3},   # -0.2
    {"id": "c", "logp_role": -2.0, "logp_unsafe": -1.9, "s_role": -0.1, "s_unsafe": 0.0},  # +0.1
    {"id": "d", "logp_role": -1.0, "logp_unsafe": -3.0, "s_role": 0.9, "s_unsafe": -1.1},  # -2.0
    {"id": "e", "logp_role": -1.0, "logp_unsafe": -0.7, "s_role": 0.8, "s_unsafe": 1.1},   # +0.3
]


def test_rds_flags_threshold_and_overrides():
    assert selection.rds_flags(ROWS) == {"a": True, "b": False, "c": True, "d": False, "e": True}
    assert selection.ids_where(selection.rds_flags(ROWS, tau=0.2)) == ["a", "e"]
    flags = selection.apply_overrides(selection.rds_flags(ROWS), {"a": False, "d": True})
    assert selection.ids_where(flags) == ["c", "d", "e"]
    with pytest.raises(SarftError, match="not in this data"):
        selection.apply_overrides(flags, {"zzz": True})


def test_random_keeps_the_size_and_is_seeded():
    rds = select_dh("sarft", ROWS)
    r0 = select_dh("random", ROWS, seed=0)
    assert sum(r0.values()) == sum(rds.values()) == 3
    assert r0 == select_dh("random", ROWS, seed=0)
    draws = {tuple(selection.ids_where(select_dh("random", ROWS, seed=s))) for s in range(10)}
    assert len(draws) > 1


def test_flip_is_the_complement_after_overrides():
    flags = select_dh("flip", ROWS, overrides={"b": True})
    assert selection.ids_where(flags) == ["d"]


def test_seal_and_biselect_drop_sets():
    assert selection.top_fraction({"x": 1.0, "y": 3.0, "z": 2.0}, 0.5) == {"y", "z"}
    assert selection.seal_style_drop(ROWS, 0.4) == {"e", "a"}  # highest s_unsafe
    # top-2 s_unsafe = {e, a}; top-2 s_role = {d, e}: e is strongly in character, so only a is dropped
    assert selection.biselect_drop(ROWS, 0.4) == {"a"}
    with pytest.raises(SarftError):
        selection.top_fraction({"x": 1.0}, 1.5)


def test_overrides_file_roundtrip_and_errors(tmp_path):
    path = selection.overrides_path(tmp_path)
    selection.save_overrides(path, {"a": True, "b": False})
    assert json.loads(path.read_text()) == {"a": True, "b": False}
    assert selection.load_overrides(path) == {"a": True, "b": False}
    path.write_text('{"a": "yes"}')
    with pytest.raises(SarftError, match="true or false"):
        selection.load_overrides(path)
    path.write_text("[1, 2]")
    with pytest.raises(SarftError, match="JSON object"):
        selection.load_overrides(path)
    with pytest.raises(SarftError, match="does not exist"):
        selection.load_overrides(tmp_path / "missing.json")


# ---- SPPFT -----------------------------------------------------------------------------------

def test_safety_block_from_gap_curve():
    gap = [0.0, 0.01, 0.05, 0.2, 0.5, 0.45, 0.3]
    assert sppft.safety_block(gap, start_fraction=0.2) == (3, 4)
    assert sppft.safety_block([-0.1, -0.2]) == (0, 0)


def test_similarity_gap_sees_a_separating_layer():
    torch.manual_seed(0)
    benign = torch.randn(3, 4, 8)
    harmful = benign.clone()
    harmful[2] = -benign[2]  # layer 2 separates harmful from benign
    gap = sppft.similarity_gap(benign, harmful[:, :2])
    assert max(range(3), key=lambda i: gap[i]) == 2


def test_parse_layer_range():
    assert sppft.parse_layer_range("6-12", 30) == (6, 12)
    assert sppft.parse_layer_range("3", 30) == (3, 3)
    for bad in ("12-6", "0-30", "a-b", "1-2-3"):
        with pytest.raises(SarftError):
            sppft.parse_layer_range(bad, 30)


@pytest.mark.parametrize("direction", losses.KL_DIRECTIONS)
def test_lean_kl_and_nll_equal_the_reference_formulas(direction):
    torch.manual_seed(2)
    policy = torch.randn(2, 4, 11, requires_grad=True)
    ref = torch.randn(2, 4, 11)
    logp = F.log_softmax(policy, -1)
    lean = losses.token_kl_from_logp(logp, losses.prepare_reference(ref, direction))
    plain = losses.token_kl(policy, ref, direction)
    assert torch.allclose(lean, plain, atol=1e-5)
    g_lean, = torch.autograd.grad(lean.sum(), policy, retain_graph=True)
    g_plain, = torch.autograd.grad(plain.sum(), policy)
    assert torch.allclose(g_lean, g_plain, atol=1e-5)
    targets = torch.tensor([[1, -100, 3, 4], [0, 0, -100, 10]])
    assert torch.allclose(losses.token_nll(logp, targets), losses.token_cross_entropy(policy, targets), atol=1e-5)
