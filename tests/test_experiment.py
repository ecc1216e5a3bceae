"""Tests of experiment validation, seeds, the registry and TOML loading in landscape.experiment."""

import json
import re

import pytest
import torch

from _helpers import tiny_experiment
from landscape import experiment as registry
from landscape.experiment import Experiment, ExpectedVerdict


@pytest.fixture
def isolated_registry(monkeypatch):
    """Let a test register experiments without leaking them into other tests."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"name": "bad name"}, "experiment name 'bad name' is invalid", id="name-space"),
        pytest.param({"name": "a/b"}, "experiment name 'a/b' is invalid", id="name-slash"),
        pytest.param({"name": ""}, "experiment name '' is invalid", id="name-empty"),
        pytest.param(
            {"dataset": "cifar10"},
            "dataset 'cifar10' is not supported; choose one of mnist, fashion-mnist, digits",
            id="dataset",
        ),
        pytest.param(
            {"widths": (64,)}, "widths (64,) must list at least an input and an output",
            id="widths-one",
        ),
        pytest.param(
            {"widths": (64, 0, 10)}, "widths (64, 0, 10) must list", id="widths-zero"
        ),
        pytest.param(
            {"optimizer": "lbfgs"},
            "optimizer 'lbfgs' is not supported; choose one of adam, sgd, rmsprop",
            id="optimizer",
        ),
        pytest.param({"lr": 0.0}, "lr must be > 0, got 0.0", id="lr-zero"),
        pytest.param({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0", id="dropout-one"),
        pytest.param(
            {"switch_optimizer": "sgd"}, "switch_optimizer, switch_lr and switch_momentum "
            "need switch_epoch", id="switch-without-epoch",
        ),
        pytest.param(
            {"switch_epoch": 2, "switch_optimizer": "sgd", "switch_lr": 0.1},
            "switch_epoch must be an integer between 1 and epochs - 1 = 1, got 2",
            id="switch-epoch-too-late",
        ),
        pytest.param(
            {"switch_epoch": 1, "switch_optimizer": "sgd"},
            "switch_epoch 1 needs switch_optimizer and switch_lr", id="switch-without-lr",
        ),
        pytest.param(
            {"switch_epoch": 1, "switch_optimizer": "adam", "switch_lr": 1e-3,
             "switch_momentum": 0.9},
            "switch_momentum 0.9 is invalid", id="switch-momentum-with-adam",
        ),
        pytest.param({"lr": float("nan")}, "lr must be > 0, got nan", id="lr-nan"),
        pytest.param(
            {"momentum": 0.9}, "momentum 0.9 is invalid; use a value >= 0 with SGD and "
            "leave it at 0 for Adam", id="momentum-with-adam",
        ),
        pytest.param(
            {"optimizer": "sgd", "momentum": -0.5}, "momentum -0.5 is invalid",
            id="momentum-negative",
        ),
        pytest.param(
            {"runs": 1}, "runs must be at least 2 so that pairwise claims have a pair, got 1",
            id="runs-one",
        ),
        pytest.param(
            {"runs": 0}, "runs must be a positive integer, got 0", id="runs-zero"
        ),
        pytest.param(
            {"epochs": 0}, "epochs must be a positive integer, got 0", id="epochs-zero"
        ),
        pytest.param(
            {"batch_size": 12.5}, "batch_size must be a positive integer, got 12.5",
            id="batch-size-float",
        ),
        pytest.param({"device": "tpu"}, "device 'tpu' is invalid", id="device"),
    ],
)
def test_experiment_rejects_invalid_field(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tiny_experiment(**overrides)


def test_experiment_message_names_experiment():
    with pytest.raises(ValueError, match=re.escape("experiment 'my-run': optimizer 'lbfgs'")):
        tiny_experiment(name="my-run", optimizer="lbfgs")


def test_experiment_accepts_sgd_momentum():
    assert tiny_experiment(optimizer="sgd", momentum=0.9).momentum == 0.9


def test_experiment_converts_widths_to_int_tuple():
    experiment = tiny_experiment(widths=[64.0, 16, 10])

    assert experiment.widths == (64, 16, 10)
    assert all(type(width) is int for width in experiment.widths)


def test_seed_follows_run_times_1000_plus_42():
    experiment = tiny_experiment(runs=5)

    assert [experiment.seed(run) for run in range(5)] == [42, 1042, 2042, 3042, 4042]


def test_seed_uses_custom_base_and_stride():
    experiment = tiny_experiment(runs=3, seed_base=7, seed_stride=10)

    assert [experiment.seed(run) for run in range(3)] == [7, 17, 27]


@pytest.mark.parametrize("run", [-1, 3])
def test_seed_rejects_run_out_of_range(run):
    with pytest.raises(ValueError, match=re.escape(f"has runs 0..2, got run {run}")):
        tiny_experiment(runs=3).seed(run)


def test_resolve_device_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert tiny_experiment(device="auto").resolve_device() == torch.device("cpu")


def test_resolve_expands_group():
    assert registry.resolve("paper") == ["paper-adam", "paper-sgd"]


def test_resolve_drops_duplicates_keeping_first():
    assert registry.resolve("paper-sgd, paper ,paper-sgd") == ["paper-sgd", "paper-adam"]


def test_resolve_all_selects_every_registered(isolated_registry):
    registry.register(tiny_experiment(name="extra"))

    assert registry.resolve("all") == registry.names()
    assert "extra" in registry.resolve("all")


def test_resolve_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown experiment 'paper-rmsprop'; registered experiments: ") as caught:
        registry.resolve("paper-adam,paper-rmsprop")

    assert "paper-adam, paper-sgd" in str(caught.value)


@pytest.mark.parametrize("selection", ["", " , ,"])
def test_resolve_rejects_empty_selection(selection):
    with pytest.raises(ValueError, match=re.escape(f"experiment selection {selection!r} names no experiment")):
        registry.resolve(selection)


def test_get_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        registry.get("nope")


def test_register_rejects_duplicate_name(isolated_registry):
    with pytest.raises(ValueError, match="experiment 'paper-adam' is already registered"):
        registry.register(tiny_experiment(name="paper-adam"))


def test_register_replace_overrides(isolated_registry):
    replacement = tiny_experiment(name="paper-adam")

    registry.register(replacement, replace=True)

    assert registry.get("paper-adam") is replacement


def test_builtin_paper_experiments_match_the_setup():
    adam = registry.get("paper-adam")

    assert adam.widths == (784, 128, 128, 128, 10)
    assert (adam.optimizer, adam.lr, adam.batch_size, adam.epochs, adam.runs) == (
        "adam", 1e-3, 256, 30, 8,
    )
    assert registry.get("paper-sgd").optimizer == "sgd"


TOML_WITH_BASE = """
[experiments.adam-lr3e-4]
base = "paper-adam"
lr = 3e-4
description = "Adam at a smaller step"

[experiments.adam-lr3e-4.expected_verdicts]
grad_norm_correlation = { verdict = "refuted", reason = "slower training decorrelates early epochs" }

[experiments.digits-sgd]
dataset = "digits"
widths = [64, 32, 10]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
epochs = 3
runs = 4
"""


def test_load_experiments_toml_applies_base_overrides(tmp_path, isolated_registry):
    path = tmp_path / "experiments.toml"
    path.write_text(TOML_WITH_BASE)

    loaded = registry.load_experiments_toml(path)

    assert [experiment.name for experiment in loaded] == ["adam-lr3e-4", "digits-sgd"]
    adam = registry.get("adam-lr3e-4")
    base = registry.get("paper-adam")
    assert adam.lr == 3e-4
    assert adam.widths == base.widths
    assert (adam.dataset, adam.optimizer, adam.epochs, adam.runs) == (
        base.dataset, base.optimizer, base.epochs, base.runs,
    )
    assert adam.description == "Adam at a smaller step"
    # The base's reference values belong to the base's configuration only.
    assert adam.reference == {}


def test_load_experiments_toml_reads_expected_verdicts(tmp_path, isolated_registry):
    path = tmp_path / "experiments.toml"
    path.write_text(TOML_WITH_BASE)

    registry.load_experiments_toml(path)

    assert registry.get("adam-lr3e-4").expected_verdicts == {
        "grad_norm_correlation": ExpectedVerdict(
            "refuted", "slower training decorrelates early epochs"
        )
    }
    assert registry.get("digits-sgd").expected_verdicts == {}


def test_load_experiments_toml_reads_table_without_base(tmp_path, isolated_registry):
    path = tmp_path / "experiments.toml"
    path.write_text(TOML_WITH_BASE)

    registry.load_experiments_toml(path)

    sgd = registry.get("digits-sgd")
    assert sgd.widths == (64, 32, 10)
    assert (sgd.dataset, sgd.optimizer, sgd.lr, sgd.momentum) == ("digits", "sgd", 0.05, 0.9)
    assert (sgd.epochs, sgd.runs, sgd.batch_size) == (3, 4, 256)


def test_toml_base_skips_expected_verdicts(tmp_path, isolated_registry):
    # The base must be registered before the file naming it is read.
    parent = tmp_path / "parent.toml"
    parent.write_text(TOML_WITH_BASE)
    child = tmp_path / "child.toml"
    child.write_text('[experiments.child]\nbase = "adam-lr3e-4"\nepochs = 5\n')

    registry.load_experiments_toml(parent)
    registry.load_experiments_toml(child)

    experiment = registry.get("child")
    assert experiment.lr == 3e-4
    assert experiment.epochs == 5
    assert experiment.expected_verdicts == {}
    assert experiment.description == ""


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param(
            'base = "paper-adam"\nlearning_rate = 0.1',
            "experiment 'bad': unknown field(s) learning_rate; valid fields are base, ",
            id="unknown-field",
        ),
        pytest.param('base = "paper-nope"', "unknown experiment 'paper-nope'", id="unknown-base"),
        pytest.param(
            'base = "paper-adam"\nlr = -1.0', "experiment 'bad': lr must be > 0, got -1.0",
            id="invalid-value",
        ),
        pytest.param(
            'base = "paper-adam"\nexpected_verdicts = { a = { verdict = "supported", reason = "x" } }',
            "expected verdict must be one of refuted, inconclusive, invalid, got 'supported'",
            id="expected-supported",
        ),
        pytest.param(
            'base = "paper-adam"\nexpected_verdicts = { a = { verdict = "refuted", reason = " " } }',
            "an expected verdict needs a non-empty reason",
            id="expected-empty-reason",
        ),
    ],
)
def test_load_experiments_toml_rejects_bad_table(tmp_path, isolated_registry, table, message):
    path = tmp_path / "experiments.toml"
    path.write_text(f"[experiments.bad]\n{table}\n")

    with pytest.raises(ValueError, match=re.escape(message)):
        registry.load_experiments_toml(path)
    assert "bad" not in registry.names()


def test_load_experiments_toml_rejects_missing_file(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(ValueError, match=re.escape(f"experiments file {str(path)!r} not found")):
        registry.load_experiments_toml(path)


def test_load_experiments_toml_rejects_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[experiments.x\nlr = ")

    with pytest.raises(ValueError, match=re.escape(f"experiments file {str(path)!r} is not valid TOML")):
        registry.load_experiments_toml(path)


def test_load_experiments_toml_rejects_file_without_experiments(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text('[other]\nkey = "value"\n')

    with pytest.raises(ValueError, match=re.escape("defines no [experiments.NAME] table")):
        registry.load_experiments_toml(path)


def test_config_hash_is_pinned():
    # A change of this value invalidates every cached run; change it on purpose only.
    assert tiny_experiment().config_hash() == "8fb1a3e18a2a43f6"
    assert registry.get("paper-adam").config_hash() == "964a5186e0dc3311"


def test_config_hash_ignores_non_training_fields():
    base = tiny_experiment().config_hash()

    assert tiny_experiment(name="renamed").config_hash() == base
    assert tiny_experiment(runs=7).config_hash() == base
    assert tiny_experiment(device="auto").config_hash() == base
    assert tiny_experiment(description="notes").config_hash() == base
    assert tiny_experiment(reference={"accuracy_mean": 0.9}).config_hash() == base


@pytest.mark.parametrize(
    "overrides",
    [
        {"lr": 1.1e-2},
        {"dataset": "mnist"},
        {"widths": (64, 17, 10)},
        {"optimizer": "sgd"},
        {"batch_size": 129},
        {"epochs": 3},
    ],
    ids=lambda overrides: next(iter(overrides)),
)
def test_config_hash_changes_with_training_field(overrides):
    assert tiny_experiment(**overrides).config_hash() != tiny_experiment().config_hash()


def test_config_hash_changes_with_momentum():
    plain = tiny_experiment(optimizer="sgd")

    assert tiny_experiment(optimizer="sgd", momentum=0.5).config_hash() != plain.config_hash()


def test_to_dict_is_json_serializable():
    experiment = tiny_experiment(
        expected_verdicts={"accuracy_variance": ExpectedVerdict("inconclusive", "few runs")},
        reference={"accuracy_mean": 0.97},
    )

    data = json.loads(json.dumps(experiment.to_dict()))

    assert data["widths"] == [64, 16, 10]
    assert data["expected_verdicts"] == {
        "accuracy_variance": {"verdict": "inconclusive", "reason": "few runs"}
    }
    assert data["reference"] == {"accuracy_mean": 0.97}
    assert Experiment(**{**data, "widths": tuple(data["widths"]), "expected_verdicts": {}}).config_hash() == (
        experiment.config_hash()
    )


def test_training_config_leaves_out_unset_new_fields():
    config = tiny_experiment().training_config()

    assert "dropout" not in config
    assert "switch_epoch" not in config


def test_training_config_includes_dropout_and_switch():
    experiment = tiny_experiment(
        epochs=4, dropout=0.2, switch_epoch=2, switch_optimizer="sgd", switch_lr=0.1,
    )

    config = experiment.training_config()

    assert config["dropout"] == 0.2
    assert (config["switch_epoch"], config["switch_optimizer"], config["switch_lr"]) == (2, "sgd", 0.1)
    assert experiment.phases() == [(0, "adam", 1e-2, 0.0), (2, "sgd", 0.1, 0.0)]


def test_robustness_group_has_nine():
    names = registry.resolve("robustness")

    assert len(names) == 9
    assert names[:2] == ["paper-adam", "paper-sgd"]
    assert registry.get("fashion-adam").dataset == "fashion-mnist"
    assert registry.get("wide-dropout").widths == (784, 512, 256, 128, 10)
