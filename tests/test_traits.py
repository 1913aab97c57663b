"""Trait raters: the offline default separates RoleBench villains from benevolent characters."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SHARED_DATA
from sarft_core.data import load_profiles
from sarft_core.errors import SarftError
from sarft_core.trait_labels import BENEVOLENT, IN_BETWEEN, VILLAINS
from sarft_core.trait_rater import split_sentences
from sarft_core.traits import (
    LEXICON, TRAITS, lexicon_malevolence, parse_rating, profile_text, rate_default, rate_traits, read_trait_csv, roc_auc,
)

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTIONS = SHARED_DATA / "profiles" / "role_descriptions.json"
ROLE_PROMPTS = SHARED_DATA / "profiles" / "role_prompts.json"

# secondary checks of the other traits (labels written down from the stories, like the villains)
AGGRESSIVE = ("Freddy Krueger", "Logan", "Thor", "Rorschach", "Travis Bickle", "Judge Dredd", "Gaston", "Murphy MacManus")
PEACEFUL = ("Stephen Hawking", "Theodore Twombly", "Sheldon Cooper", "Twilight Sparkle", "Angel", "Benjamin Button", "Sonny", "Mater")
DECEIVERS = ("Tom Ripley", "Willie Soke", "Jordan Belfort", "Mary Sibley", "Colonel Hans Landa", "Bruno Antony", "HAL 9000", "Jack Sparrow")
HONEST = ("John Coffey", "Coach Eric Taylor", "Angel", "Stephen Hawking", "Harvey Milk", "Po", "Juno MacGuff", "Leroy Jethro Gibbs")


@pytest.fixture(scope="module")
def rolebench_traits():
    profiles = load_profiles(DESCRIPTIONS)
    wanted = set(VILLAINS + BENEVOLENT + IN_BETWEEN + AGGRESSIVE + PEACEFUL + DECEIVERS + HONEST)
    assert wanted <= set(profiles), wanted - set(profiles)  # the labels name real RoleBench roles
    table = rate_default({n: profiles[n] for n in sorted(wanted)})
    return table.set_index("role")


def _auc(table, trait, high, low):
    return roc_auc(table.loc[list(high), trait], table.loc[list(low), trait])


def test_default_separates_villains_from_benevolent(rolebench_traits):
    auc = _auc(rolebench_traits, "malevolence", VILLAINS, BENEVOLENT)
    print(f"malevolence AUC villains vs benevolent: {auc:.3f}")
    assert auc >= 0.97


def test_default_beats_the_ten_word_lexicon():
    profiles = load_profiles(DESCRIPTIONS)
    lex = {n: lexicon_malevolence(profile_text(profiles[n])) for n in VILLAINS + BENEVOLENT}
    assert len(LEXICON) == 10
    assert roc_auc([lex[n] for n in VILLAINS], [lex[n] for n in BENEVOLENT]) < 0.97


def test_default_places_in_between_characters_between(rolebench_traits):
    mal = rolebench_traits["malevolence"]
    v, g, b = (statistics.mean(mal.loc[list(grp)]) for grp in (VILLAINS, IN_BETWEEN, BENEVOLENT))
    assert v > g > b
    assert _auc(rolebench_traits, "malevolence", IN_BETWEEN, BENEVOLENT) >= 0.85
    assert _auc(rolebench_traits, "malevolence", VILLAINS, IN_BETWEEN) >= 0.6


def test_default_other_traits_point_the_right_way(rolebench_traits):
    t = rolebench_traits
    assert _auc(t, "aggression", AGGRESSIVE, PEACEFUL) >= 0.9
    assert _auc(t, "deceptiveness", DECEIVERS, HONEST) >= 0.9
    assert _auc(t, "benevolence", BENEVOLENT, VILLAINS) >= 0.9
    assert ((t[list(TRAITS)] >= 0) & (t[list(TRAITS)] <= 1)).all().all()


def test_profile_text_drops_the_generic_chat_instructions():
    profiles = load_profiles(ROLE_PROMPTS)
    text = profile_text(profiles["Freddy Krueger"])
    assert "disfigured serial killer" in text
    assert "answer some questions" not in text and "language model" not in text
    assert "Your name is" not in profile_text(profiles["Stephen Hawking"])
    assert split_sentences("One. Two! \"Three?\" Four") == ["One.", "Two!", "\"Three?\"", "Four"]


def test_demo_roles_rank_as_written(demo_profiles):
    t = rate_default(demo_profiles).set_index("role")
    assert t.loc["Baron Vex Morrow", "malevolence"] > 0.5 > t.loc["Sister Alma Reyes", "malevolence"]
    assert t.loc["Sister Alma Reyes", "benevolence"] > t.loc["Baron Vex Morrow", "benevolence"]


# ---------------------------------------------------------------- csv source
def test_csv_source_validates_and_matches_names(tmp_path, demo_profiles):
    good = tmp_path / "t.csv"
    good.write_text("role,malevolence,benevolence,notes\nbaron vex morrow,0.9,0.1,x\nSister Alma Reyes,0,1,\nCaptain Nell Corran,0.2,0.6,\n")
    table = rate_traits(demo_profiles, source="csv", csv=good)
    assert list(table.columns) == ["role", "malevolence", "benevolence"]
    assert list(table["role"]) == list(demo_profiles)  # profiles' order and spelling
    assert table.set_index("role").loc["Baron Vex Morrow", "malevolence"] == 0.9

    bad = tmp_path / "bad.csv"
    bad.write_text("role,malevolence\nBaron Vex Morrow,4\n")
    with pytest.raises(SarftError, match="from 0 to 1"):
        read_trait_csv(bad)
    bad.write_text("role,malevolance\nBaron Vex Morrow,0.4\n")
    with pytest.raises(SarftError, match="rename it to 'malevolence'"):
        read_trait_csv(bad)
    bad.write_text("role,malevolence\nBaron Vex Morrow,0.4\n")
    with pytest.raises(SarftError, match="no annotations for 2 role"):
        read_trait_csv(bad, roles=list(demo_profiles))
    bad.write_text("name,malevolence\nBaron Vex Morrow,0.4\n")
    with pytest.raises(SarftError, match="no 'role' column"):
        read_trait_csv(bad)
    with pytest.raises(SarftError, match="needs --csv"):
        rate_traits(demo_profiles, source="csv")


# ---------------------------------------------------------------- openai source, on a loopback server
class _Rater(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        user = body["messages"][-1]["content"]
        evil = 9 if ("cruel" in user or "warlord" in user) else 1
        content = f'Thinking... {{"malevolence": {evil}, "aggression": {evil}, "deceptiveness": 5, "benevolence": {10 - evil}}}'
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_openai_source_on_a_local_endpoint_is_cached(tmp_path, monkeypatch, demo_profiles):
    monkeypatch.setenv("SARFT_HOME", str(tmp_path))
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rater)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        t = rate_traits(demo_profiles, source="openai", base_url=url, model="rater").set_index("role")
        assert t.loc["Baron Vex Morrow", "malevolence"] == 0.9 and t.loc["Sister Alma Reyes", "malevolence"] == 0.1
        assert t.loc["Sister Alma Reyes", "deceptiveness"] == 0.5
        calls = _Rater.calls
        rate_traits(demo_profiles, source="openai", base_url=url, model="rater")
        assert _Rater.calls == calls  # all from the cache
    finally:
        server.shutdown()
    with pytest.raises(SarftError, match="cannot reach"):
        rate_traits(demo_profiles, source="openai", base_url=url, model="other", retries=0, timeout=2)


def test_parse_rating_takes_the_last_valid_object():
    reply = 'e.g. {"malevolence": 99} then {"malevolence": 2, "aggression": 3, "deceptiveness": 4, "benevolence": 10}'
    assert parse_rating(reply) == {"malevolence": 0.2, "aggression": 0.3, "deceptiveness": 0.4, "benevolence": 1.0}
    with pytest.raises(ValueError):
        parse_rating("I cannot rate this.")


def test_cli_writes_one_row_per_role(tmp_path):
    out = tmp_path / "traits.csv"
    proc = subprocess.run([sys.executable, "-m", "sarft_core", "traits", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == ["role", *TRAITS] and len(df) == 3
    bad = subprocess.run([sys.executable, "-m", "sarft_core", "traits", "--source", "csv", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "needs --csv" in bad.stderr and "Traceback" not in bad.stderr


# --- the 1-5 ordinal labels of all 95 characters -------------------------------------------
def test_ordinal_labels_cover_every_rolebench_character_and_agree_with_the_groups():
    from sarft_core.data.names import normalise_name
    from sarft_core.trait_labels import MALEVOLENCE

    profiles = load_profiles(DESCRIPTIONS)
    assert {normalise_name(n) for n in MALEVOLENCE} == {normalise_name(n) for n in profiles}
    assert set(MALEVOLENCE.values()) == {1, 2, 3, 4, 5}
    assert all(MALEVOLENCE[n] >= 4 for n in VILLAINS) and all(MALEVOLENCE[n] == 1 for n in BENEVOLENT)
    assert all(2 <= MALEVOLENCE[n] <= 4 for n in IN_BETWEEN)


@pytest.mark.slow
def test_default_malevolence_ranks_all_characters_with_the_ordinal_labels():
    """The learned scale, cross-fitted: each labelled character is rated by the fold models that did
    not see its label. Measured 0.807 [0.717, 0.867] for the shipped build and 0.803-0.822 for six
    rebuilds with other folds (bench/bench_traits.py); the pole contrast alone gives 0.665."""
    from sarft_core.stats import spearman_rho
    from sarft_core.trait_labels import MALEVOLENCE

    profiles = load_profiles(DESCRIPTIONS)
    table = rate_default(profiles).set_index("role")
    rho = spearman_rho([table.loc[n, "malevolence"] for n in MALEVOLENCE], [MALEVOLENCE[n] for n in MALEVOLENCE])
    assert rho >= 0.75
    poles = rate_default(profiles, malevolence="poles").set_index("role")
    assert rho > spearman_rho([poles.loc[n, "malevolence"] for n in MALEVOLENCE], [MALEVOLENCE[n] for n in MALEVOLENCE]) + 0.05


# ---------------------------------------------------------------- the learned scale's mechanics
def test_shipped_trait_model_was_built_on_the_current_labels():
    """A changed label in trait_labels.py needs a rebuild (scripts/build_trait_model.py)."""
    from sarft_core.data.names import normalise_name
    from sarft_core.trait_labels import MALEVOLENCE
    from sarft_core.trait_model import FOLDS, labels_digest, shipped_model

    model = shipped_model()
    assert model.meta["labels"] == labels_digest(MALEVOLENCE)
    assert set(model.held_out) == {normalise_name(n) for n in MALEVOLENCE}
    assert len(model.weights) == FOLDS * model.meta["repeats"]
    assert all(len(models) == model.meta["repeats"] for models in model.held_out.values())


def test_cross_fitting_never_rates_a_labelled_character_with_its_own_label():
    """Changing one character's label changes only the models of the other folds, so its own rating
    stays the same; an unlabelled character gets the mean of the fold models."""
    import numpy as np

    pytest.importorskip("sklearn")
    from sarft_core.data.names import normalise_name
    from sarft_core.trait_model import fit_model

    rng = np.random.default_rng(0)
    names = [f"role {i}" for i in range(40)]
    X = rng.normal(size=(40, 6))
    labels = {n: int(1 + (i % 5)) for i, n in enumerate(names)}
    model, oof = fit_model(names, X, labels)
    assert np.allclose(model.predict(names, X), oof)
    from sarft_core.stats import spearman_rho

    assert model.meta["oof_spearman"] == pytest.approx(spearman_rho(oof, [labels[n] for n in names]), abs=1e-4)
    target = names[7]
    own = model.held_out[normalise_name(target)]
    assert len(own) == model.meta["repeats"] == 5 and len(model.weights) == 25
    folds = [[[m for m in model.held_out[normalise_name(n)] if m // 5 == r][0] % 5 for n in names] for r in range(5)]
    changed, _ = fit_model(names, X, {**labels, target: 5 if labels[target] != 5 else 1}, folds=folds)
    assert changed.held_out == model.held_out
    assert changed.predict([target], X[7:8]) == pytest.approx(model.predict([target], X[7:8]))
    others = [k for k in range(25) if k not in own]
    assert not np.allclose(np.asarray(changed.weights)[others], np.asarray(model.weights)[others])
    unseen = rng.normal(size=(1, 6))
    every = unseen @ np.asarray(model.weights).T + np.asarray(model.intercepts)
    assert model.predict(["someone new"], unseen) == pytest.approx([float(every.mean())])


def test_trait_model_refuses_features_of_another_recipe():
    from sarft_core.trait_model import MalevolenceModel, shipped_model

    model = shipped_model()
    with pytest.raises(SarftError, match="features per profile"):
        model.predict(["x"], [[0.0] * 3])
    with pytest.raises(SarftError, match="rebuild it"):
        MalevolenceModel.from_json({**model.to_json(), "version": "old"})
    with pytest.raises(SarftError, match="unknown malevolence scale"):
        rate_default({"x": "a kind man"}, malevolence="vibes")


def test_feature_cache_keys_on_the_readers_weights_not_the_objects_id():
    """Regression: the profile-feature memo keyed on id(language model); a freed model's id can be
    reused by a new one with other weights, whose features would then be served from the memo."""
    from types import SimpleNamespace

    import torch

    from sarft_core.models import LoadedModel
    from sarft_core.trait_model import FeatureReader

    rater = SimpleNamespace(model_dir="minilm")
    lm = lambda fp, dtype=torch.float32: LoadedModel(torch.nn.Linear(2, 2).to(dtype), None, "x", "/x", fp)  # noqa: E731
    a, b = FeatureReader(rater, lm("dir-aaaa")), FeatureReader(rater, lm("dir-bbbb"))
    assert a.identity() != b.identity()  # other weights: other features
    assert a.identity() == FeatureReader(rater, lm("dir-aaaa")).identity()  # another object, the same weights: shared
    assert a.identity() != FeatureReader(rater, lm("dir-aaaa", torch.bfloat16)).identity()  # another precision
