"""The dataset registry: every descriptor complete, and what the rest of fgvc finds in it."""

from __future__ import annotations

import pickle

import pytest

import fgvc.data as fgvc_data
from fgvc.commands.data import _parser
from fgvc.data.datamodule import FGVCDataModule
from fgvc.data.datasets import dataset_names, dataset_spec, registry
from fgvc.data.download import SOURCES
from fgvc.data.transforms import PRESETS
from fgvc.errors import UsageError

NEW = ("nabirds", "dogs", "flowers102", "pets", "imagenet")


def test_registry_holds_every_dataset_module():
    names = dataset_names()
    assert {"cub", "cars", "aircraft", "folder", "synthetic", *NEW} <= set(names)
    for name, spec in registry().items():
        assert spec.name == name and spec.title
        module = getattr(fgvc_data, spec.datamodule)
        assert isinstance(module, type) and issubclass(module, FGVCDataModule)
        if spec.num_classes is not None:  # a benchmark: published counts for its splits
            assert set(spec.counts) >= set(spec.splits), name
        for source in spec.sources:  # every download verified
            assert source.sha256 or source.md5, (name, source.filename)
            assert source.folder == spec.sources[0].folder
        assert spec.sources or spec.manual, f"{name}: no way to get it"
        if spec.preset is not None:
            assert name in PRESETS


def test_cli_choices_and_downloads_come_from_the_registry():
    parser = _parser()
    args = parser.parse_args(["check", "nabirds", "--root", "x"])
    assert args.dataset == "nabirds"
    with pytest.raises(UsageError, match="invalid choice: 'imagenet-22k'.*'nabirds'"):
        parser.parse_args(["check", "imagenet-22k"])
    assert {name for name, spec in registry().items() if spec.sources} == set(SOURCES)


def test_generated_datamodule_is_one_class_that_pickles():
    cls = fgvc_data.DogsDataModule
    assert cls is fgvc_data.DogsDataModule and cls.__module__ == "fgvc.data"
    assert pickle.loads(pickle.dumps(cls)) is cls
    module = cls(root="nowhere", num_workers=0)
    assert type(pickle.loads(pickle.dumps(module))) is cls
    assert module.eval_preprocessing.preset == "dogs"
    with pytest.raises(AttributeError, match="NoSuchDataModule"):
        _ = fgvc_data.NoSuchDataModule


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'birds'; choose one of .*nabirds"):
        dataset_spec("birds")


def test_not_downloadable_dataset_with_download_true_says_where_to_get_it(tmp_path):
    module = fgvc_data.NABirdsDataModule(root=str(tmp_path), download=True, num_workers=0)
    with pytest.raises(FileNotFoundError, match="fgvc data download nabirds"):
        module.setup("fit")


@pytest.mark.parametrize("name", NEW)
def test_data_config_composes_with_a_recipe_and_a_trunk(name, capsys):
    """configs/data/<name>.yaml between a recipe and a trunk: that dataset, the recipe kept."""
    import yaml

    from fgvc.commands.train import main
    from tests.test_commands_train import REPO

    parts = ["recipes/isqrt_finetune.yaml", f"data/{name}.yaml", "trunks/resnet50.yaml"]
    args = [word for part in parts for word in ("--config", str(REPO / "configs" / part))]
    assert main(["fit", *args, "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == f"fgvc.data.{dataset_spec(name).datamodule}"
    init = printed["data"]["init_args"]
    assert (init["preset"], init["image_size"], init["batch_size"]) == (name, 448, 10)
    assert (printed["model"]["lr"], printed["model"]["arch"]) == (1.2e-3, "resnet50")
