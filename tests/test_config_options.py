"""examples/train_mtl.py's hyper-parameter options are generated from TrainConfig (minimtl.cli.add_config_options)."""
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from minimtl import cli
from minimtl.train import TrainConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def train_mtl():
    spec = importlib.util.spec_from_file_location("train_mtl", EXAMPLES / "train_mtl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_options_give_the_default_config(train_mtl):
    assert train_mtl.train_config(train_mtl.parse_arguments([])) == TrainConfig()


def test_every_command_line_field_has_its_option(train_mtl):
    parser = cli.ArgumentParser(prog="x")
    cli.add_config_options(parser, TrainConfig)
    spellings = {s for action in parser._actions for s in action.option_strings}
    for field in dataclasses.fields(TrainConfig):
        option = "--" + field.name.replace("_", "-")
        assert (option in spellings) == field.metadata.get("command_line", True), option
    # today's spellings, bool fields both ways
    for option in ["--no-augment", "--no-balance", "--batch-norm-scale", "--nesterov", "--staircase",
                   "--standardize", "--no-standardize", "--test-flip", "--no-test-flip", "--task-weights", "--tasks"]:
        assert option in spellings, option
    assert "--epoch-samples" not in spellings


def test_options_reach_the_config(train_mtl):
    arguments = train_mtl.parse_arguments(
        ["--config", "B", "--tasks", "smile, age", "--epochs", "3", "--lr", "0.05", "--decay-steps", "2000",
         "--staircase", "--nesterov", "--task-weights", "smile=2,age=0.5", "--init", "paper", "--batch-norm-scale",
         "--standardize", "--no-test-flip", "--no-augment", "--no-balance", "--normalize", "all", "--seed", "4"])
    config = train_mtl.train_config(arguments, seed=7)
    assert config == TrainConfig(config="B", tasks=("smile", "age"), epochs=3, lr=0.05, decay_steps=2000,
                                 staircase=True, nesterov=True, task_weights={"smile": 2.0, "age": 0.5}, init="paper",
                                 batch_norm_scale=True, standardize=True, test_flip=False, augment=False,
                                 balance=False, normalize="all", seed=7)


@pytest.mark.parametrize("argv", [["--config", "AB"], ["--config", ""], ["--epochs", "x"], ["--init", "xavier"]])
def test_bad_values_are_one_line_usage_errors(train_mtl, argv, capsys):
    with pytest.raises(SystemExit) as stop:
        train_mtl.parse_arguments(argv)
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_field_without_a_command_line_form_is_refused():
    @dataclasses.dataclass
    class Odd:
        shape: tuple[int, int] = (1, 2)

    with pytest.raises(TypeError, match="Odd.shape"):
        cli.add_config_options(cli.ArgumentParser(prog="x"), Odd)
