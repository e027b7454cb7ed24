"""configs/imagenet_*.yaml: the authors' from-scratch recipe as written, the fast recipe as
FFCV's ResNet-50 configs have it, and tiny fits of both on an ImageNet replica (sizes
overridden, nothing else)."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import yaml

from fgvc.commands.main import main
from fgvc.data.resolution import ProgressiveResize
from fgvc.train.module import FGVCClassifier
from tests.test_commands_train import REPO, workdir  # noqa: F401 - the fixture
from tests.test_data_datasets_imagenet import make_imagenet
from tests.test_data_resolution import FFCV_RN50

CONFIGS = ("imagenet_isqrt_r50", "imagenet_isqrt_r101", "imagenet_gap_r50")


def tiny_imagenet_args(root: str = "data", epochs: int = 2, image_size: int = 32) -> list[str]:
    """Overrides that make an ImageNet config train a ResNet-18 with a d=8 head on a replica
    (:func:`make_imagenet`, or its shards) in seconds."""
    return [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.precision=32-true",
        f"--trainer.max_epochs={epochs}",
        "--trainer.logger=false",
        "--trainer.default_root_dir=runs",
        "--model.arch=resnet18",
        "--model.reduce_dim=8",
        f"--data.init_args.root={root}",
        f"--data.init_args.image_size={image_size}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
    ]


@pytest.mark.parametrize("name", CONFIGS)
def test_recipe_is_the_authors(name, capsys):
    assert main(["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model, data = config["model"], config["data"]["init_args"]
    assert config["data"]["class_path"] == "fgvc.data.ImageNetDataModule"
    assert (model["optimizer"], model["lr"], model["lr_batch_size"]) == ("sgd", 0.1, 256)
    assert (model["momentum"], model["weight_decay"], model["weight_decay_all"]) == (
        0.9,
        1e-4,
        True,
    )
    assert config["checkpoint_every_n_steps"] == 1000
    assert (model["scheduler"], model["milestones"], model["gamma"]) == ("step", [30, 45, 60], 0.1)
    assert config["trainer"]["max_epochs"] == 65 and model["pretrained"] is None
    assert (data["image_size"], data["preset"], data["val_split"]) == (224, "imagenet", None)
    assert model["representation"] == ("gap" if "gap" in name else "isqrt")


@pytest.mark.slow
def test_tiny_fit_from_the_r50_config(workdir):  # noqa: F811 - the fixture
    make_imagenet(workdir / "data")
    tiny = [*tiny_imagenet_args(), "--model.milestones=[1]"]
    config = str(REPO / "configs" / "imagenet_isqrt_r50.yaml")
    assert main(["fit", "--config", config, *tiny]) == 0
    (run,) = (workdir / "runs").glob("*/version_0")
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    rates = [float(r["lr-SGD/backbone"]) for r in rows if r.get("lr-SGD/backbone")]
    # lr 0.1 for 256, global batch 4: 0.1 * 4 / 256, then x0.1 from epoch 1 (milestone)
    assert rates[0] == pytest.approx(0.1 * 4 / 256) and rates[-1] == pytest.approx(0.1 * 4 / 2560)
    val = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    assert len(val) == 2 and all(0.0 <= v <= 1.0 for v in val)


# -- the fast recipe (FFCV's ResNet-50 recipe) -----------------------------------------------
FAST = ("imagenet_isqrt_r50_fast", "imagenet_gap_r50_fast")
RECIPE = REPO / "configs" / "recipes" / "imagenet_fast.yaml"


def comment_table(path) -> dict[str, list[float]]:
    """The rows of the table in the recipe's comments (epochs, start, end, top-1, ...)."""
    rows = {}
    for line in path.read_text().splitlines():
        words = line.lstrip("# ").split()
        if len(words) == 7 and words[0] in ("epochs", "start", "end", "top-1", "top-5", "min"):
            rows[words[0]] = [float(w) for w in words[1:]]
    return rows


def test_the_recipes_table_is_ffcvs():
    """The documented ramps are FFCV's rn50 configs' (typed from them in FFCV_RN50) and end
    within their runs; the figures are their README's table."""
    table = comment_table(RECIPE)
    assert list(zip(table["epochs"], table["start"], table["end"])) == FFCV_RN50
    assert table["top-1"] == [73.8, 75.6, 76.6, 77.2, 78.0, 78.4]
    assert table["top-5"] == [90.8, 92.1, 92.7, 93.2, 93.7, 94.1]
    for epochs, start, end in FFCV_RN50:
        ProgressiveResize(160, 192, start, end).check_epochs(epochs)


@pytest.mark.parametrize("name", FAST)
def test_fast_recipe_is_ffcvs(name, capsys):
    assert main(["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--print_config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    model, data = config["model"], config["data"]["init_args"]
    assert config["data"]["class_path"] == "fgvc.data.ImageNetDataModule"
    # rn50_*_epochs.yaml: lr 1.7, batch_size 512 per GPU x world_size 8, momentum 0.9,
    # weight_decay 1e-4 with bn_wd 0, label_smoothing 0.1, lr_schedule_type cyclic (peak 2)
    assert (model["optimizer"], model["lr"], model["lr_batch_size"]) == ("sgd", 1.7, 4096)
    assert (data["batch_size"] * 8, model["lr_scaling"]) == (4096, "auto")  # auto: linear
    assert (model["momentum"], model["weight_decay"], model["weight_decay_all"]) == (
        0.9,
        1e-4,
        False,
    )
    assert (model["scheduler"], model["warmup_epochs"]) == ("triangular", 2)
    assert model["label_smoothing"] == 0.1 and model["val_tta"] is True
    assert model["pretrained"] is None and model["lr_mult_classifier"] == 1.0
    # the 40-epoch row: ramp 160 -> 192 between epochs 29 and 34, validation at 256 with
    # a 224/256 center crop (the imagenet preset: resize 293, crop 256)
    epochs = config["trainer"]["max_epochs"]
    ramp = data["progressive_resize"]
    assert (epochs, ramp["start_epoch"], ramp["end_epoch"]) in FFCV_RN50
    assert (ramp["start_size"], ramp["end_size"], ramp.get("multiple", 32)) == (160, 192, 32)
    assert (data["image_size"], data["preset"], data["val_split"]) == (256, "imagenet", None)
    assert model["representation"] == ("gap" if "gap" in name else "isqrt")
    # the network and the data the config describes can be built (1,000 classes linked)
    built = FGVCClassifier(**{**model, "num_classes": 1000})
    assert (
        built.hparams.scheduler == "triangular"
        and built.spec.representation == (model["representation"])
    )
    assert ProgressiveResize.from_config(ramp).size(epochs - 1) == 192


class SidesAndRates(pl.Callback):
    """Each training step's (epoch, image side, backbone learning rate)."""

    seen: list[tuple[int, int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rates = {g["group"]: g["lr"] for g in trainer.optimizers[0].param_groups}
        SidesAndRates.seen.append((trainer.current_epoch, batch[0].shape[-1], rates["backbone"]))


@pytest.mark.slow
def test_tiny_fit_from_the_fast_config_ramps_size_and_rate(workdir):  # noqa: F811 - the fixture
    make_imagenet(workdir / "data")  # 8 training images: 2 steps an epoch at batch 4
    SidesAndRates.seen = []
    tiny = [
        *tiny_imagenet_args(epochs=3, image_size=20),
        f"--trainer.callbacks+={__name__}.SidesAndRates",
        "--model.warmup_epochs=1",
        "--data.init_args.progressive_resize.start_size=8",
        "--data.init_args.progressive_resize.end_size=24",
        "--data.init_args.progressive_resize.start_epoch=0",
        "--data.init_args.progressive_resize.end_epoch=2",
        "--data.init_args.progressive_resize.multiple=8",
    ]
    config = str(REPO / "configs" / "imagenet_isqrt_r50_fast.yaml")
    assert main(["fit", "--config", config, *tiny]) == 0
    # sides 8, 16, 24 (the midpoint 16 is a multiple of 8); workers: tests/test_data_resolution.py
    assert [(epoch, side) for epoch, side, _ in SidesAndRates.seen] == [
        (0, 8),
        (0, 8),
        (1, 16),
        (1, 16),
        (2, 24),
        (2, 24),
    ]
    # lr 1.7 for 4096 at a global batch of 4; triangular: 1e-4 at step 0, the peak at
    # epoch 1 (step 2), then down to 0 at step 6
    base = 1.7 * 4 / 4096
    factors = [1e-4, 1e-4 + (1 - 1e-4) / 2, 1.0, 0.75, 0.5, 0.25]
    rates = [rate for _, _, rate in SidesAndRates.seen]
    assert rates == pytest.approx([base * f for f in factors], rel=1e-9)
    (run,) = (workdir / "runs").glob("*/version_0")
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    logged = [float(r["lr-SGD/backbone"]) for r in rows if r.get("lr-SGD/backbone")]
    assert logged == pytest.approx([base * f for f in factors[::2]], rel=1e-6)  # per epoch
    val = [float(r["val/top1_tta"]) for r in rows if r.get("val/top1_tta")]
    assert len(val) == 3 and all(0.0 <= v <= 1.0 for v in val)
