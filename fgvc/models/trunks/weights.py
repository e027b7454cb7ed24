"""ImageNet weights for trunks: torchvision's weight enums and timm's pretrained configs.

``pretrained`` values that reach a trunk (:func:`parse_imagenet`): ``imagenet`` (the trunk's
default weights), ``imagenet:<name>`` (a torchvision enum name such as ``IMAGENET1K_V2``, or
a timm pretrained tag such as ``in1k``) and ``imagenet:<path>`` (a file of those weights in
the library's own layout, for machines without network: torchvision's ``.pth``, timm's
``model.safetensors`` / ``pytorch_model.bin``).
"""

from __future__ import annotations

import os
import pickle
import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from fgvc.errors import CheckpointError, DownloadError
from fgvc.models.trunks.registry import TrunkWeights

if TYPE_CHECKING:
    import torchvision.models as tvm

IMAGENET = "imagenet"


def parse_imagenet(source: object) -> tuple[bool, str | None]:
    """``(is an ImageNet source, the choice after "imagenet:" or None)``."""
    if not isinstance(source, str):
        return False, None
    if source == IMAGENET:
        return True, None
    if source.startswith(IMAGENET + ":") and len(source) > len(IMAGENET) + 1:
        return True, source[len(IMAGENET) + 1 :]
    return False, None


def is_file_choice(choice: str | None) -> bool:
    """Whether an ``imagenet:<choice>`` names a file rather than a set of weights."""
    return choice is not None and (os.sep in choice or "/" in choice or Path(choice).is_file())


def load_trunk_state(trunk: nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """``trunk.load_state_dict(state)``, strictly, as one :class:`CheckpointError` line."""
    try:
        trunk.load_state_dict(dict(state), strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise CheckpointError(f"{origin} does not fit the trunk {trunk.arch}: {detail}") from err


def read_weights_file(path: str) -> dict[str, torch.Tensor]:
    """A state dict from a weights file (no code is run: see ``read_checkpoint``)."""
    from fgvc.models.checkpoint import extract_state_dict, read_checkpoint

    return extract_state_dict(read_checkpoint(path), path)


# ------------------------------------------------------------------------------ torchvision
def torchvision_models() -> ModuleType:
    """``torchvision.models``, imported on first use: torchvision brings ``torch._dynamo``
    along (over a second), which building a network needs but naming one (a config, a
    bundle's ``model.json``, ``--help``) does not."""
    import torchvision.models

    return torchvision.models


def torchvision_builder(
    arch: str, enum_name: str
) -> tuple[Callable[..., nn.Module], type[tvm.WeightsEnum]]:
    """torchvision's constructor of ``arch`` (``resnet50``) and its weights enum."""
    models = torchvision_models()
    return getattr(models, arch), getattr(models, enum_name)


def torchvision_member(enum: type[tvm.WeightsEnum], choice: str | None) -> tvm.WeightsEnum:
    """The enum member ``choice`` names (None: ``IMAGENET1K_V1``, which every torchvision
    classifier here has, so all trunks start from the same kind of weights by default).

    Raises:
        ValueError: a name the enum does not have (the message lists its names).
    """
    name = choice or "IMAGENET1K_V1"
    if name == "DEFAULT":
        return enum.DEFAULT
    if name not in enum.__members__:
        known = ", ".join([*enum.__members__, "DEFAULT"])
        raise ValueError(
            f"{enum.__name__} has no weights {name!r}; pretrained takes imagenet:<one of "
            f"{known}> or imagenet:<path to the .pth file>"
        )
    return enum[name]


def describe_torchvision(member: tvm.WeightsEnum) -> TrunkWeights:
    """Preprocessing and accuracy as the enum's ``transforms()`` and ``meta`` give them."""
    prep = member.transforms()
    metrics = member.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return TrunkWeights(
        name=member.name,
        mean=tuple(prep.mean),
        std=tuple(prep.std),
        resize=int(prep.resize_size[0]),
        crop=int(prep.crop_size[0]),
        interpolation=prep.interpolation.value,
        top1=metrics.get("acc@1"),
    )


def load_torchvision(
    trunk: nn.Module,
    builder: Callable[..., nn.Module],
    enum: type[tvm.WeightsEnum],
    choice: str | None,
    progress: bool,
    part: Callable[[nn.Module], dict[str, torch.Tensor]],
    fix_keys: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = dict,
) -> None:
    """Load torchvision ImageNet weights into ``trunk``: the full classifier is built with
    them (torchvision downloads and checks the hash) and ``part`` of it copied over.

    Args:
        builder: torchvision's constructor (``tvm.resnet50``).
        enum: its weights enum.
        choice: an enum name, a file in torchvision's layout, or None (IMAGENET1K_V1).
        part: the trunk's state dict taken from the full classifier.
        fix_keys: renames a file's keys to the classifier's (torchvision does it itself for
            DenseNet's old key names when it loads its own downloads).
    """
    if is_file_choice(choice):
        net = builder(weights=None)
        state = fix_keys(read_weights_file(choice))
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise CheckpointError(f"{choice} is not torchvision's {trunk.arch}: {detail}") from err
        load_trunk_state(trunk, part(net), choice)
        return
    member = torchvision_member(enum, choice)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(member.url).path)
    was_cached = cached.is_file()
    try:
        net = builder(weights=member, progress=progress)
    except (urllib.error.URLError, OSError, RuntimeError, pickle.UnpicklingError) as err:
        if was_cached:
            raise CheckpointError(
                f"could not load torchvision's cached ImageNet weights {cached} ({err}); "
                f"delete the file to download it again from {member.url}"
            ) from err
        raise DownloadError(
            f"could not download torchvision's ImageNet weights {member} for {trunk.arch} "
            f"from {member.url} ({getattr(err, 'reason', err)}); without network, fetch it "
            f"elsewhere and put it at {cached}, or set pretrained: imagenet:/path/to/it"
        ) from err
    load_trunk_state(trunk, part(net), f"torchvision {member}")
