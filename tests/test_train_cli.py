"""The `train`, `eval`, `score`, `align`, `reproduce` and `survey` command lines are derived from
their typed configs (TrainConfig, GenerationConfig, ScoreOptions, AlignConfig, ReproduceConfig,
SurveyConfig): same defaults, same allowed values."""
import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from sarft_core.cli import build_parser
from sarft_core.cli import train as train_cli
from sarft_core.cli._config_args import Option, add_config_options, config_from_args
from sarft_core.training.run import METHODS, TrainConfig
from sarft_core.validation import choice, declared_choices, number


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_every_training_option_has_the_configs_default_and_allowed_values():
    actions = {a.dest: a for a in train_parser()._actions}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert set(fields) - set(actions) == set(train_cli.CONFIG_ONLY)  # every other field is an option
    allowed = declared_choices(TrainConfig)
    assert allowed["method"] == tuple(METHODS) and set(allowed) >= {"peft", "autocast", "report_to", "kl_direction"}
    for name, opt in {**train_cli.FIRST_OPTIONS, **train_cli.OPTIONS}.items():
        f, action = fields[name], actions[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert action.default == (",".join(default) if isinstance(default, list) else default), name
        if name in allowed:
            assert action.choices == (allowed[name] if opt.enforce_choices else None), name
    assert actions["lam"].option_strings == ["--lambda"] and actions["lora_alpha"].type is int
    assert "tensorboard, wandb, mlflow" in actions["report_to"].help


def sub_parser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["eval", "score"])
def test_generation_and_scoring_options_come_from_their_configs(command):
    from sarft_core.cli import eval as eval_cli, score as score_cli
    from sarft_core.evaluation.generation import DECODINGS, GenerationConfig
    from sarft_core.scoring import ScoreOptions
    from sarft_core.backends import backend_names

    cls, options = (GenerationConfig, eval_cli.GENERATION_OPTIONS) if command == "eval" else (ScoreOptions, score_cli.SCORE_OPTIONS)
    actions = {a.dest: a for a in sub_parser(command)._actions}
    allowed = declared_choices(cls)
    assert tuple(allowed["backend"]) == backend_names() and allowed.get("decoding", DECODINGS) == DECODINGS
    for f in dataclasses.fields(cls):
        if f.name in options:
            assert actions[f.name].default == f.default, f.name
            assert actions[f.name].choices == allowed.get(f.name), f.name
    required = ["--role", "x"] if command == "score" else []
    args = sub_parser(command).parse_args([*required, "--out", "o.jsonl"])
    assert config_from_args(cls, args) == cls()  # the bare command is the default config
    flags = ["--backend", "torch", "--tensor-parallel", "2"] + (["--decoding", "rose", "--rose-alpha", "0.25"] if command == "eval"
                                                              else ["--normalise", "sum", "--batch-tokens", "512"])
    got = config_from_args(cls, sub_parser(command).parse_args([*required, "--out", "o.jsonl", *flags]))
    assert got.tensor_parallel == 2
    assert (got.decoding, got.rose_alpha) == ("rose", 0.25) if command == "eval" else (got.normalise, got.max_batch_tokens) == ("sum", 512)


def test_the_bare_command_is_the_default_config(monkeypatch):
    monkeypatch.delenv("SARFT_MODEL", raising=False)
    args = build_parser().parse_args(["train", "--role", "John Doe", "--out", "run"])
    assert train_cli.config_from_args(args) == TrainConfig(role="John Doe")
    args = build_parser().parse_args(["train", "--out", "run", "--lora-targets", "q_proj, ,o_proj", "--columns", "input=q,output=a",
                                      "--lambda", "0.2", "--autocast", "bf16", "--report-to", "wandb"])
    cfg = train_cli.config_from_args(args)
    assert cfg.role == "" and cfg.lora_targets == ["q_proj", "o_proj"] and cfg.columns == {"input": "q", "output": "a"}
    assert (cfg.lam, cfg.autocast, cfg.report_to) == (0.2, "bf16", "wandb")


@dataclass
class Toy:
    mode: str = choice("a", ("a", "b"))
    style: str = choice("plain", ("plain", "bold"))
    count: int = number(3, lo=1, integer=True, option="--count")
    ratio: float | None = None
    names: list[str] = field(default_factory=lambda: ["x", "y"])
    loud: bool = False
    label: str = "toy"


def test_a_config_field_becomes_an_option_with_its_type_default_and_choices(capsys):
    parser = argparse.ArgumentParser(prog="toy")
    add_config_options(parser, Toy, {"mode": Option("one of {allowed}"), "style": Option(enforce_choices=False), "count": Option(),
                                     "ratio": Option(flags=("--r",)), "names": Option(), "loud": Option(), "label": Option()})
    assert config_from_args(Toy, parser.parse_args([])) == Toy()
    got = config_from_args(Toy, parser.parse_args(["--mode", "b", "--style", "odd", "--count", "5", "--r", "0.5",
                                                   "--names", "p, q", "--loud", "--label", "t"]))
    assert got == Toy(mode="b", style="odd", count=5, ratio=0.5, names=["p", "q"], loud=True, label="t")
    assert {a.dest: a.help for a in parser._actions}["mode"] == "one of a, b"
    for bad, message in ((["--mode", "c"], "invalid choice: 'c'"), (["--count", "2.5"], "invalid int value: '2.5'")):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
        assert message in capsys.readouterr().err
    # what argparse let through (enforce_choices=False, or a config built in code) is refused by the config's declaration
    from sarft_core.errors import SarftError
    from sarft_core.validation import validate_choices

    validate_choices(Toy(style="bold"))
    for bad in ({"style": "odd"}, {"mode": ["a"]}):
        with pytest.raises(SarftError, match=r"unknown --(style 'odd'|mode \['a'\])") as err:
            validate_choices(Toy(**bad))
        assert err.value.fix.startswith("use one of")


def test_align_options_come_from_align_config():
    from sarft_core.alignment import AlignConfig
    from sarft_core.cli import align as align_cli
    from sarft_core.errors import SarftError

    actions = {a.dest: a for a in sub_parser("align")._actions}
    for f in dataclasses.fields(AlignConfig):
        if f.name in align_cli.options():
            assert actions[f.name].default == f.default, f.name
    assert config_from_args(AlignConfig, sub_parser("align").parse_args(["--out", "o"])) == AlignConfig()
    cfg = config_from_args(AlignConfig, sub_parser("align").parse_args(["--out", "o", "--epochs", "0", "--lora-r", "4"]))
    from sarft_core.alignment import _cli_args

    assert _cli_args(cfg) == ["--epochs", "0.0", "--lora-r", "4"]  # the manifest's command holds what was set
    with pytest.raises(SarftError, match=r"--epochs must be a finite number in \(0, 100\), got 0"):
        cfg.validate()


def test_survey_options_come_from_survey_config_and_reach_its_workers(tmp_path):
    """Every SurveyConfig field but the roles and the mode is an option with the field's default;
    a worker's command line (rebuilt from the parsed options) gives the same config back."""
    from sarft_core.cli import survey as survey_cli
    from sarft_core.errors import SarftError
    from sarft_core.survey import FULL, SCREEN, SurveyConfig
    from sarft_core.traits import SOURCES

    fields = {f.name: f for f in dataclasses.fields(SurveyConfig)}
    assert set(fields) - set(survey_cli.SURVEY_OPTIONS) == {"roles", "mode"}
    actions = {a.dest: a for a in sub_parser("survey")._actions}
    for name in survey_cli.SURVEY_OPTIONS:
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert actions[name].default == (",".join(default) if isinstance(default, list) else default), name
    assert actions["trait_source"].option_strings == ["--traits"] and actions["trait_source"].choices == SOURCES
    base = ["--roles", "John Doe", "--out", str(tmp_path / "s")]
    assert survey_cli.config_from_args(sub_parser("survey").parse_args(base), ["John Doe"]) == SurveyConfig(roles=["John Doe"], mode=FULL)

    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    given = base + ["--screen", "--methods", "sft,seal", "--limit", "3", "--exact", "--data", str(data), "--traits", "csv",
                    "--traits-csv", "t.csv", "--eval-args", "--suite probes", "--batch-tokens", "512"]
    args = sub_parser("survey").parse_args(given)
    cfg = survey_cli.config_from_args(args, ["John Doe"])
    assert cfg.mode == SCREEN and cfg.methods == ["sft", "seal"] and cfg.limit == 3 and cfg.exact and cfg.batch_tokens == 512
    assert cfg.data == [str(data.resolve())] and cfg.eval_args == "--suite probes"
    child = survey_cli._child_argv(args)
    assert child[0] == "survey" and child[-2:] == ["--worker", "--no-progress"]
    again = sub_parser("survey").parse_args(child[1:])
    assert survey_cli.config_from_args(again, ["John Doe"]) == cfg
    with pytest.raises(SarftError, match="data file does not exist"):
        survey_cli.config_from_args(sub_parser("survey").parse_args(base + ["--data", str(tmp_path / "missing.jsonl")]), ["x"])
    with pytest.raises(SarftError, match=r"unknown --traits 'llm'"):
        SurveyConfig(roles=["x"], trait_source="llm").validate()


def test_a_recipe_becomes_train_arguments_that_parse_back_to_its_settings():
    import pytest

    from sarft_core.cli import build_parser
    from sarft_core.cli.train import config_from_args, recipe_args
    from sarft_core.reproduce import TRAIN_RECIPES

    settings = TRAIN_RECIPES["experiment"]["settings"]
    args = build_parser().parse_args(["train", "--role", "x", "--out", "/tmp/unused", *recipe_args(settings)])
    cfg = config_from_args(args)
    assert {k: getattr(cfg, k) for k in settings} == settings
    from sarft_core.reproduce import DEFAULT_TRAIN

    assert float(TRAIN_RECIPES["experiment"]["lr"]) == DEFAULT_TRAIN["lr"]  # the text the form shows reads back exactly
    from sarft_core.reproduce import LORA_SETTINGS, recipe_settings

    full = recipe_settings("experiment", "full")  # full fine-tuning keeps the batch, precision and order, not LoRA's shape
    assert full["batch_size"] == settings["batch_size"] and not set(full) & set(LORA_SETTINGS)
    assert recipe_settings("experiment", "lora") == settings and recipe_settings("quick", "lora") == {}
    with pytest.raises(KeyError, match="lora_rank"):  # a misspelt setting is an error, not dropped
        recipe_args({"lora_rank": 16})
