"""Networks: a trunk (torchvision or timm) with a representation head (iSQRT-COV by default)."""

from fgvc.models.authors import AUTHORS_CHECKPOINTS, AuthorsCheckpoint
from fgvc.models.checkpoint import CheckpointError, load_state_dict_checked, read_checkpoint
from fgvc.models.factory import build_model
from fgvc.models.heads import (
    HEADS,
    REPRESENTATIONS,
    AvgPoolHead,
    BilinearHead,
    CompactBilinearHead,
    CovarianceHead,
    HeadEntry,
    MPNCovHead,
)
from fgvc.models.net import FGVCNet
from fgvc.models.pretrained import (
    NAMED_SOURCES,
    PretrainedFile,
    convert_authors_state_dict,
    load_pretrained,
)
from fgvc.models.spec import NetSpec
from fgvc.models.trunks import ARCHS, TRUNKS, ResNetTrunk, TrunkEntry, trunk_entry

__all__ = [
    "ARCHS",
    "AUTHORS_CHECKPOINTS",
    "HEADS",
    "NAMED_SOURCES",
    "REPRESENTATIONS",
    "TRUNKS",
    "AuthorsCheckpoint",
    "AvgPoolHead",
    "BilinearHead",
    "CheckpointError",
    "CompactBilinearHead",
    "CovarianceHead",
    "FGVCNet",
    "HeadEntry",
    "MPNCovHead",
    "NetSpec",
    "PretrainedFile",
    "ResNetTrunk",
    "TrunkEntry",
    "build_model",
    "convert_authors_state_dict",
    "load_pretrained",
    "load_state_dict_checked",
    "read_checkpoint",
    "trunk_entry",
]
