"""configs/imagenet_*.yaml: the authors' from-scratch recipe as written, and a tiny fit of it
on an ImageNet replica (sizes overridden, nothing else)."""

from __future__ import annotations

import csv

import pytest
import yaml

from fgvc.commands.main import main
from tests.test_commands_train import REPO, workdir  # noqa: F401 - the fixture
from tests.test_data_datasets_imagenet import make_imagenet

CONFIGS = ("imagenet_isqrt_r50", "imagenet_isqrt_r101", "imagenet_gap_r50")


@pytest.mark.parametrize("name", CONFIGS)
def test_recipe_is_the_authors(name, capsys):
    assert main(["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model, data = config["model"], config["data"]["init_args"]
    assert config["data"]["class_path"] == "fgvc.data.ImageNetDataModule"
    assert (model["optimizer"], model["lr"], model["lr_batch_size"]) == ("sgd", 0.1, 256)
    assert (model["momentum"], model["weight_decay"]) == (0.9, 1e-4)
    assert (model["scheduler"], model["milestones"], model["gamma"]) == ("step", [30, 45, 60], 0.1)
    assert config["trainer"]["max_epochs"] == 65 and model["pretrained"] is None
    assert (data["image_size"], data["preset"], data["val_split"]) == (224, "imagenet", None)
    assert model["representation"] == ("gap" if "gap" in name else "isqrt")


@pytest.mark.slow
def test_tiny_fit_from_the_r50_config(workdir):  # noqa: F811 - the fixture
    make_imagenet(workdir / "data")
    tiny = [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32-true",
        "--trainer.max_epochs=2",
        "--trainer.logger=false",
        "--trainer.default_root_dir=runs",
        "--model.arch=resnet18",
        "--model.reduce_dim=8",
        "--model.milestones=[1]",
        "--data.init_args.root=data",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]
    config = str(REPO / "configs" / "imagenet_isqrt_r50.yaml")
    assert main(["fit", "--config", config, *tiny]) == 0
    (run,) = (workdir / "runs").glob("*/version_0")
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    rates = [float(r["lr-SGD/backbone"]) for r in rows if r.get("lr-SGD/backbone")]
    # lr 0.1 for 256, global batch 4: 0.1 * 4 / 256, then x0.1 from epoch 1 (milestone)
    assert rates[0] == pytest.approx(0.1 * 4 / 256) and rates[-1] == pytest.approx(0.1 * 4 / 2560)
    val = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    assert len(val) == 2 and all(0.0 <= v <= 1.0 for v in val)
