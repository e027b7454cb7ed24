"""timm models as trunks: names, their pretrained configs, and their weights.

``model.arch: timm/<name>`` takes any model ``timm.create_model`` knows. Its ImageNet weights
(``pretrained: imagenet``) come through timm's own loading: the Hugging Face hub cache
(``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) or a download into it;
``imagenet:<tag>`` picks another of its pretrained tags, ``imagenet:<path>`` a local file
(timm's ``model.safetensors`` / ``pytorch_model.bin`` layout) on machines without network.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from fgvc.errors import DownloadError
from fgvc.models.trunks.registry import Trunk, TrunkWeights
from fgvc.models.trunks.weights import is_file_choice, load_trunk_state

PREFIX = "timm/"


def timm_name(arch: str) -> str:
    """``timm/convnext_atto`` -> ``convnext_atto``.

    Raises:
        ValueError: not a ``timm/`` name, or a model timm does not have.
    """
    import timm

    name = arch[len(PREFIX) :] if arch.startswith(PREFIX) else ""
    if not name or not timm.is_model(name):
        raise ValueError(
            f"unknown arch {arch!r}: timm has no model {name!r} (timm.list_models('*part*') "
            f"lists its names; write them as timm/<name>)"
        )
    return name


def pretrained_cfg(name: str, choice: str | None) -> Any:
    """timm's pretrained config of ``name`` (its default tag, or ``choice``).

    Raises:
        ValueError: a tag timm does not have for this model.
    """
    import timm

    full = name if choice is None else f"{name}.{choice}"
    try:
        cfg = timm.models.get_pretrained_cfg(full, allow_unregistered=False)
    except RuntimeError:  # "Invalid pretrained tag"
        cfg = None
    if cfg is None:
        tags = ", ".join(t.split(".", 1)[-1] for t in timm.list_pretrained(f"{name}.*")) or "none"
        raise ValueError(
            f"timm has no pretrained weights {full!r}; tags for {name}: {tags} "
            f"(pretrained: imagenet:<tag>, or imagenet:<path to the weights file>)"
        )
    return cfg


def describe_timm(name: str, choice: str | None) -> TrunkWeights:
    """The weights' preprocessing as timm's ``pretrained_cfg`` gives it (resize: the crop
    over ``crop_pct``, as timm's evaluation transform computes it)."""
    if is_file_choice(choice):
        choice = None  # a local copy of the default weights
    cfg = pretrained_cfg(name, choice)
    crop = int(cfg.input_size[-1])
    return TrunkWeights(
        name=f"{name}.{cfg.tag}" if cfg.tag else name,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        resize=math.floor(crop / (cfg.crop_pct or 1.0)),
        crop=crop,
        interpolation=cfg.interpolation,
    )


def load_timm(trunk: nn.Module, choice: str | None, progress: bool) -> None:
    """Load ImageNet weights into ``trunk.model`` by building the same model with timm's
    ``pretrained=True`` (``trunk.create_timm(name, **kwargs)``) and copying its state.

    Raises:
        DownloadError: timm could not get the file (offline): one line naming the model, the
            hub cache and the local-file override.
        CheckpointError: a local file that does not fit.
    """
    import timm

    name = trunk.timm_name
    kwargs: dict[str, Any] = {"pretrained": True}
    if is_file_choice(choice):
        kwargs["pretrained_cfg_overlay"] = {"file": str(choice)}
        full = name
    else:
        cfg = pretrained_cfg(name, choice)
        full = f"{name}.{cfg.tag}" if cfg.tag else name
    timm.models.set_pretrained_download_progress(progress)
    try:
        fresh = trunk.create_timm(full, **kwargs)
    except (OSError, RuntimeError, ValueError, ConnectionError) as err:
        if "file" in kwargs.get("pretrained_cfg_overlay", {}):
            raise
        raise DownloadError(_offline_line(full, err)) from err
    state = {f"model.{k}": v for k, v in fresh.state_dict().items()}
    load_trunk_state(trunk, state, f"timm {full}")


def _offline_line(full: str, err: BaseException) -> str:
    from huggingface_hub import constants

    cfg = pretrained_cfg(*full.split(".", 1)) if "." in full else pretrained_cfg(full, None)
    hub = cfg.hf_hub_id or full
    detail = " ".join(str(err).split())[:200]
    return (
        f"could not get timm's ImageNet weights for {full} (hub id {hub}): {detail}; without "
        f"network, download {hub}'s model.safetensors elsewhere and set pretrained: "
        f"imagenet:/path/to/model.safetensors, or copy the hub's cached files into "
        f"{constants.HF_HUB_CACHE} (HF_HUB_CACHE / HF_HOME move it)"
    )


class TimmTrunk(Trunk):
    """What the timm trunks share: the timm model under ``model`` (its keys
    ``model.<timm's names>``) and an identity ``out`` on the map, the layer Grad-CAM hooks.
    Subclasses say how the model is created (:meth:`create_timm`) and read."""

    cam_layer = "out"

    def __init__(self, name: str, last_stride: int, stride: int, channels: int) -> None:
        super().__init__()
        self.timm_name = name
        self.arch = f"{PREFIX}{name}"
        self.last_stride = last_stride
        self.stride = stride
        self.out_channels = channels
        self.model = self.create_timm(name)
        self.out = nn.Identity()

    def create_timm(self, name: str, **extra: Any) -> nn.Module:
        raise NotImplementedError
