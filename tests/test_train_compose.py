"""Composed configs (fgvc/train/compose.py): the benchmark configs, now composed from a
recipe, a dataset and a trunk, resolve to exactly what the complete files they replaced
resolved to (tests/configs_before/: the files as they were, 57 lines each, names typed
twice), and so do the same parts given as several --config on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fgvc.commands.main import main
from fgvc.errors import ConfigError
from fgvc.train.cli import resolve_config
from fgvc.train.compose import config_parts, derived_name, expand_config_args

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BEFORE = Path(__file__).resolve().parent / "configs_before"

#: benchmark -> (recipe, dataset, trunk) it is composed of
BENCHMARKS = {
    "cub": ("isqrt_finetune", "cub", "resnet50"),
    "cub_r101": ("isqrt_finetune", "cub", "resnet101"),
    "cars": ("isqrt_finetune", "cars", "resnet50"),
    "cars_r101": ("isqrt_finetune", "cars", "resnet101"),
    "aircraft": ("isqrt_finetune", "aircraft", "resnet50"),
    "aircraft_r101": ("isqrt_finetune", "aircraft", "resnet101"),
    "cub_vgg16": ("isqrt_finetune_vgg", "cub", "vgg16"),
    "cub_convnext": ("adamw_cosine", "cub", "convnext_tiny"),
}


def resolved(*args: str) -> dict:
    """``fgvc fit <args>``'s config, without the top-level ``name`` (the files before had
    none: they typed it into each logger)."""
    config = resolve_config(["fit", *args])
    config.pop("name")
    return config


def test_every_config_before_has_its_composed_successor():
    assert sorted(p.stem for p in BEFORE.glob("*.yaml")) == sorted([*BENCHMARKS, "folder", "demo"])


@pytest.mark.parametrize("name", sorted([*BENCHMARKS, "folder", "demo"]))
def test_composed_config_resolves_as_the_complete_file_did(name):
    before = resolved("--config", str(BEFORE / f"{name}.yaml"))
    now = resolved("--config", str(CONFIGS / f"{name}.yaml"))
    assert now == before
    # the name, typed once, is the run folder's and W&B's
    csv, wandb = now["trainer"]["logger"]
    assert csv["init_args"]["name"] == wandb["init_args"]["name"]
    assert (
        csv["init_args"]["name"]
        == yaml.safe_load((BEFORE / f"{name}.yaml").read_text())["trainer"]["logger"][0][
            "init_args"
        ]["name"]
    )


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_parts_on_the_command_line_resolve_as_the_benchmark(name):
    recipe, data, trunk = BENCHMARKS[name]
    parts = [
        f"recipes/{recipe}.yaml",
        f"data/{data}.yaml",
        f"trunks/{trunk}.yaml",
    ]
    args = [word for part in parts for word in ("--config", str(CONFIGS / part))]
    assert resolved(*args, "--name", name) == resolved("--config", str(BEFORE / f"{name}.yaml"))


def test_without_a_name_the_run_is_named_after_dataset_and_trunk(tmp_path):
    parts = ["recipes/isqrt_finetune.yaml", "data/aircraft.yaml", "trunks/resnet101.yaml"]
    args = [word for part in parts for word in ("--config", str(CONFIGS / part))]
    config = resolve_config(["fit", *args])
    names = {lg["init_args"]["name"] for lg in config["trainer"]["logger"]}
    assert names == {"aircraft_resnet101"}
    # a later part overrides what it names and keeps the rest; command-line flags still win
    config = resolve_config(
        ["fit", *args, "--config", str(CONFIGS / "trunks/convnext_tiny.yaml"), "--model.lr", "3e-4"]
    )
    assert config["model"]["arch"] == "timm/convnext_tiny" and config["model"]["last_stride"] == 1
    assert config["model"]["lr"] == 3e-4 and config["model"]["lr_mult_classifier"] == 5.0
    assert config["data"]["init_args"]["level"] == "variant"
    assert {lg["init_args"]["name"] for lg in config["trainer"]["logger"]} == {
        "aircraft_convnext_tiny"
    }


def test_one_logger_named_names_the_other(tmp_path):
    """An older config that names only its CSV logger: W&B takes the same name; --name
    renames both."""
    config = yaml.safe_load((BEFORE / "cub.yaml").read_text())
    del config["trainer"]["logger"][1]["init_args"]["name"]
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(config))
    loggers = resolve_config(["fit", "--config", str(path)])["trainer"]["logger"]
    assert [lg["init_args"]["name"] for lg in loggers] == ["cub", "cub"]
    loggers = resolve_config(["fit", "--config", str(path), "--name", "x"])["trainer"]["logger"]
    assert [lg["init_args"]["name"] for lg in loggers] == ["x", "x"]


def test_derived_name_parts():
    from jsonargparse import Namespace

    def config(class_path: str, arch: str, representation: str) -> Namespace:
        return Namespace(
            data=Namespace(class_path=class_path),
            model=Namespace(arch=arch, representation=representation),
        )

    assert derived_name(config("fgvc.data.CUBDataModule", "resnet50", "isqrt")) == "cub_resnet50"
    assert (
        derived_name(config("fgvc.data.NABirdsDataModule", "timm/convnext_tiny", "gap"))
        == "nabirds_convnext_tiny_gap"
    )


def test_bases_expand_in_order_with_the_files_own_keys_last(tmp_path):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "a.yaml").write_text("model:\n  lr: 0.5\n")
    (tmp_path / "parts" / "b.yaml").write_text("config: a.yaml\nmodel:\n  momentum: 0.5\n")
    top = tmp_path / "top.yaml"
    top.write_text("config: [parts/b.yaml]\nmodel:\n  lr: 0.25\n")
    parts = config_parts(top)
    assert parts[:2] == [str(tmp_path / "parts" / "a.yaml"), "model:\n  momentum: 0.5\n"]
    assert yaml.safe_load(parts[2]) == {"model": {"lr": 0.25}}
    # in place: what comes after still overrides; a file without bases is left as it is
    words = expand_config_args(["fit", "-c", str(top), "--model.lr", "1", f"--config={top}"])
    assert words[:7] == ["fit", "--config", parts[0], "--config", parts[1], "--config", parts[2]]
    assert words[7:9] == ["--model.lr", "1"] and len(words) == 15
    plain = tmp_path / "parts" / "a.yaml"
    assert expand_config_args(["--config", str(plain)]) == ["--config", str(plain)]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("config: missing.yaml\n", "its base missing.yaml is not a file"),
        ("config: {a: 1}\n", "config: must be a file or a list of files"),
        ("config: [loop.yaml]\n", "include itself"),
    ],
)
def test_bad_bases_are_one_line(tmp_path, capsys, content, expected):
    path = tmp_path / "loop.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        config_parts(path)
    assert main(["fit", "--config", str(path), "--print_config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(path) in err[0], err


@pytest.mark.parametrize(
    "part",
    ["base.yaml", *sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.glob("*/*.yaml"))],
)
def test_every_part_is_valid_on_its_own(part, capsys):
    """A recipe, a dataset or a trunk alone parses (keys, types, class paths)."""
    assert main(["fit", "--config", str(CONFIGS / part), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    kind = part.split("/")[0]
    if kind == "data":
        assert printed["data"]["class_path"].startswith("fgvc.data.")
    elif kind == "trunks":
        trunk = yaml.safe_load((CONFIGS / part).read_text())["model"]
        assert printed["model"]["arch"] == trunk["arch"]
    else:  # base.yaml, and a recipe that starts from it: the trainer and its two loggers
        assert kind in ("recipes", "base.yaml") and len(printed["trainer"]["logger"]) == 2
