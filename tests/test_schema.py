"""The training options are declared once (the proto's TrainOptions and TrainConfig) and everything
else derives from them: the trainer's and the client's flags, their help with the real defaults, the
server's conversion of messages, the API's recipe defaults."""
from __future__ import annotations

import dataclasses

import pytest

from client.cli import build_parser as client_parser
from textgen import schema
from textgen.options import RECIPES, OptionError, TrainConfig
from textgen.v1 import textgen_pb2 as pb
from trainer.cli import build_parser as trainer_parser
from trainer.cli import train_config

SAMPLE_VALUES = {int: "7", float: "0.5", str: None}


def actions(parser, command: str) -> dict:
    """``{dest: argparse action}`` of one subcommand's flags."""
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest: a for a in sub._actions}


def test_the_proto_and_train_config_list_the_same_options():
    assert sorted(schema.NAMES) == sorted(field.name for field in dataclasses.fields(TrainConfig))
    assert [f.name for f in pb.TrainOptions.DESCRIPTOR.fields] == list(schema.NAMES)


def test_train_config_defaults_are_the_ones_the_proto_declares():
    config = TrainConfig()
    for spec in schema.OPTIONS:
        assert getattr(config, spec.name) == spec.default, spec.name
    assert (config.lstm_layer_sizes, config.sample_len, config.learning_rate, config.epochs, config.seed) == \
        ((128, 128), 60, 0.01, 150, None)  # the original example's


def test_every_option_is_documented_and_every_choice_is_what_train_config_accepts():
    for spec in schema.OPTIONS:
        assert spec.help, spec.name
        for choice in spec.choices:
            TrainConfig.from_dict({spec.name: choice}).validate()
        if spec.choices:
            with pytest.raises(OptionError, match=f"must be one of {', '.join(spec.choices)}, got 'bogus'"):
                TrainConfig.from_dict({spec.name: "bogus"}).validate()
    assert set(schema.option("recipe").choices) == set(RECIPES)


@pytest.mark.parametrize("parser, command", [(trainer_parser, "train"), (client_parser, "submit-train")])
def test_the_trainer_and_the_client_have_a_flag_for_every_option_with_its_real_default(parser, command):
    flags = actions(parser(), command)
    for spec in schema.OPTIONS:
        action = flags[spec.name]
        assert f"--{spec.flag}" in action.option_strings
        if spec.default_text:
            assert f"default {spec.default_text}" in action.help, (spec.name, action.help)
    assert "--layers" in flags["lstm_layer_sizes"].option_strings  # the client's name since the start


def test_every_option_flag_reaches_train_config():
    for spec in schema.OPTIONS:
        value = (spec.choices[-1] if spec.choices else "24,16" if spec.is_list else SAMPLE_VALUES[spec.kind])
        args = trainer_parser().parse_args(["train", "corpus", f"--{spec.flag}", value])
        config = train_config(args)
        expected = schema.parse_layer_sizes(value) if spec.is_list else spec.kind(value)
        if spec.name == "recipe":  # a recipe's own settings come with it
            assert config == TrainConfig.from_recipe(value)
        else:
            assert getattr(config, spec.name) == expected, spec.name


def test_messages_and_dicts_carry_the_same_options():
    options = {"lstm_layer_sizes": [64, 32], "epochs": 3, "seed": 0, "objective": "all", "clip_norm": 0.0,
               "time_budget_minutes": 2.5}
    message = schema.to_message(options)
    assert schema.to_dict(message) == options  # a 0 that was set stays set; unset ones stay out
    assert schema.to_dict(pb.TrainOptions()) == {}
    full = TrainConfig().to_dict()
    assert schema.to_dict(schema.to_message(full)) == {k: v for k, v in full.items() if v is not None}
    with pytest.raises(schema.UnknownOption, match="^unknown training options epochz; known: lstm_layer_sizes, "):
        schema.to_message({"epochz": 3})
    assert schema.to_dict(schema.to_message({"epochz": 3, "epochs": 2}, strict=False)) == {"epochs": 2}


def test_weight_decay_is_an_option_everywhere_and_reaches_adamw():
    """The option added to show what adding one takes: the proto, TrainConfig, its use, the page."""
    from trainer.model import build_model, compile_model

    assert TrainConfig().weight_decay == 0.1  # the value AdamW had before it was an option (nanoGPT's)
    config = train_config(trainer_parser().parse_args(["train", "x", "--optimizer", "adamw", "--weightDecay", "0.02"]))
    assert (config.optimizer, config.weight_decay) == ("adamw", 0.02)
    client_args = client_parser().parse_args(["submit-train", "--corpus", "x", "--weight-decay", "0.02"])
    assert schema.to_dict(schema.to_message({"weight_decay": client_args.weight_decay})) == {"weight_decay": 0.02}
    with pytest.raises(OptionError, match=r"^weight decay must be in \[0.0, 1.0\], got 1.5$"):
        TrainConfig(weight_decay=1.5).validate()
    model = compile_model(build_model(5, (4,)), config)
    assert float(model.optimizer.weight_decay) == pytest.approx(0.02)
