"""configs/sweep.yaml: every trial the W&B agent would start is an `fgvc fit` command line
that parses into the sampled recipe."""

from __future__ import annotations

import copy
import inspect
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from fgvc.commands.main import main
from fgvc.runs import MONITOR
from fgvc.train.cli import resolve_config
from fgvc.train.module import FGVCClassifier

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "configs" / "sweep.yaml"


def load_sweep() -> dict[str, Any]:
    return yaml.safe_load(SWEEP.read_text(encoding="utf-8"))


def agent_command(sweep: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The command line W&B's agent starts for a trial with these parameter values.

    wandb's own functions fill ``${envvar:...}`` (``create_sweep_command``) and build the
    ``${args}`` family (``create_sweep_command_args``: ``--<name>=<value>``); the rest
    follows ``Agent._command_run`` in ``wandb/wandb_agent.py`` (wandb 0.31), which is not
    callable on its own: ``${interpreter}`` is ``python``, ``${program}`` the sweep's
    ``program``, ``${env}`` ``/usr/bin/env`` (not on Windows), and each word that is one
    ``${macro}`` is replaced by that list (an unknown macro by nothing).
    """
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    command = create_sweep_command(copy.deepcopy(sweep.get("command")))
    server = {"program": sweep["program"], "args": {k: {"value": v} for k, v in values.items()}}
    macros = create_sweep_command_args(server)
    macros["interpreter"] = ["python"]
    macros["program"] = [server["program"]]
    macros["env"] = ["/usr/bin/env"]
    words: list[str] = []
    for word in map(str, command):
        if word.startswith("${") and word.endswith("}"):
            words += macros.get(word[2:-1]) or []
        else:
            words.append(word)
    return words


def samples(parameters: dict[str, dict], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Trials at the bounds and ``count - 2`` random draws, as W&B's distributions give
    them (log-uniform values, uniform, categorical)."""
    rng = random.Random(seed)
    trials: list[dict[str, Any]] = [{}, {}] + [{} for _ in range(count - 2)]
    for name, spec in parameters.items():
        if "values" in spec:
            choices = spec["values"]
            picks = [choices[0], choices[-1]] + [rng.choice(choices) for _ in range(count - 2)]
        elif spec["distribution"] == "log_uniform_values":
            low, high = math.log(spec["min"]), math.log(spec["max"])
            draws = [math.exp(rng.uniform(low, high)) for _ in range(count - 2)]
            picks = [spec["min"], spec["max"], *draws]
        else:
            assert spec["distribution"] == "uniform", spec
            draws = [rng.uniform(spec["min"], spec["max"]) for _ in range(count - 2)]
            picks = [spec["min"], spec["max"], *draws]
        for trial, value in zip(trials, picks):
            trial[name] = value
    return trials


def test_sweep_definition():
    sweep = load_sweep()
    assert sweep["method"] == "bayes"
    assert sweep["metric"] == {"name": MONITOR, "goal": "maximize"}  # what fit logs
    assert sweep["early_terminate"]["type"] == "hyperband"
    assert (REPO / sweep["program"]).is_file()
    recipe = inspect.signature(FGVCClassifier).parameters
    names = set(sweep["parameters"])
    assert names == {
        "model.lr",
        "model.weight_decay",
        "model.lr_mult_classifier",
        "model.freeze_backbone_epochs",
        "model.label_smoothing",
    }
    for name in names:
        section, key = name.split(".")
        assert section == "model" and key in recipe
    lr = sweep["parameters"]["model.lr"]
    assert lr["min"] < recipe["lr"].default == 1.2e-3 < lr["max"]
    # every value the sweep can draw is a recipe the model accepts
    for trial in samples(sweep["parameters"], 4):
        kwargs = {k.split(".")[1]: v for k, v in trial.items()}
        FGVCClassifier(arch="resnet18", reduce_dim=8, pretrained=None, num_classes=3, **kwargs)


@pytest.mark.parametrize("program", ["configs/cub.yaml", "configs/cars.yaml"])
def test_agent_command_parses_into_the_sampled_recipe(program, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the agent runs from the checkout; program is relative to it
    sweep = load_sweep()
    sweep["program"] = program  # what `wandb sweep --program configs/cars.yaml` does
    for trial in samples(sweep["parameters"], 3, seed=len(program)):
        words = agent_command(sweep, trial)
        assert words[:6] == [
            "/usr/bin/env", "fgvc", "fit", "--config", program, "--data.init_args.val_split=0.1"
        ]  # fmt: skip
        assert sorted(words[6:]) == sorted(f"--{k}={v}" for k, v in trial.items())
        capsys.readouterr()
        assert main([*words[2:], "--print_config"]) == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        for name, value in trial.items():
            assert printed["model"][name.split(".")[1]] == value, name
        base = resolve_config(["fit", "--config", program])  # composed from parts
        assert printed["data"]["class_path"] == base["data"]["class_path"]
        assert printed["data"]["init_args"]["val_split"] == 0.1  # tuned on held-out data


def test_a_sweep_trial_never_tunes_on_the_test_split(monkeypatch, capsys, tmp_path):
    """A trial (WANDB_SWEEP_ID set) of a config that validates on the test split is refused
    in one line before anything runs; the same with a held-out split starts."""
    from tests.test_commands_train import write_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = write_config(tmp_path, max_epochs=1)
    assert main(["fit", "--config", str(cfg), "--data.init_args.val_split", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "W&B sweep trial" in err[0] and "val_split=0.1" in err[0], err
    monkeypatch.delenv("WANDB_SWEEP_ID")
    capsys.readouterr()
    args = ["--data.init_args.val_split", "0", "--trainer.max_steps", "1"]
    assert main(["fit", "--config", str(cfg), *args, "--trainer.limit_val_batches", "1"]) == 0
