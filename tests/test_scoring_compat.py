"""The transformers API in use is the supported one: no deprecated cache keyword (transformers 5.x
renamed ``past_key_values`` to ``cache`` and removes the old name in 5.40)."""
import logging
import warnings

import pytest

from sarft_core.evaluation.rose import rose_ids
from sarft_core.scoring.engine import cache_kwarg, encode_passes, output_cache, prefix_cache, reduce_logps, score_pass
from sarft_core.scoring.published import published_logps


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def no_deprecations():
    """Fails the test on a FutureWarning / DeprecationWarning, or on transformers' logged
    'deprecated' notice (the output classes log, rather than warn, when ``past_key_values`` is read)."""
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        yield
    logger.removeHandler(handler)
    assert not [m for m in handler.messages if "deprecated" in m.lower()], handler.messages


def test_cache_keyword_follows_the_forward_signature():
    class New:
        def forward(self, input_ids=None, cache=None, use_cache=None):
            pass

    class Old:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            pass

    assert cache_kwarg(New()) == "cache" and cache_kwarg(Old()) == "past_key_values"


def test_output_cache_reads_the_declared_field():
    from dataclasses import dataclass

    @dataclass
    class NewOut:
        cache: object = "new"

    @dataclass
    class OldOut:
        past_key_values: object = "old"

    assert output_cache(NewOut()) == "new" and output_cache(OldOut()) == "old"


def test_generic_scoring_path_uses_the_supported_cache_api(tiny_lm, demo_profiles, demo_samples, monkeypatch, no_deprecations):
    import sarft_core.scoring.engine as engine

    monkeypatch.setattr(engine, "_PACKED_DISABLED", True)  # the Hugging Face path, prefix cache expanded
    profile = demo_profiles["Baron Vex Morrow"]
    samples = demo_samples[:4]
    enc = encode_passes(tiny_lm.tokenizer, {"role": profile.role_prompt}, samples)
    assert prefix_cache(tiny_lm.model, enc.prompt_ids["role"][0][:5]) is not None
    got = score_pass(tiny_lm.model, enc.prompt_ids["role"], enc.answer_ids, tiny_lm.tokenizer.pad_token_id)
    ref = published_logps(tiny_lm.model, tiny_lm.tokenizer, profile.role_prompt, samples)
    assert max(abs(reduce_logps(t) - r) for t, r in zip(got.token_logps, ref)) < 1e-4


def test_rose_uses_the_supported_cache_api(tiny_lm, no_deprecations):
    tok = tiny_lm.tokenizer
    safe = [tok.encode("Be kind. Hello"), tok.encode("Be kind. Tell me a story")]
    unsafe = [tok.encode("Be cruel. Hello"), tok.encode("Be cruel. Tell me a story")]
    out = rose_ids(tiny_lm, safe, unsafe, 0.5, 4)
    assert len(out) == 2 and all(len(r) <= 4 for r in out)
