"""Where each cell of a trunk's output map sits on the input: ``(stride, offset)``.

Cell ``j`` of the map is centred on input pixel ``offset + stride * j``. Each convolution or
pooling layer on the main path moves the centre by ``stride_so_far * ((k_eff - 1) / 2 - p)``
(``k_eff = dilation * (k - 1) + 1``) and multiplies the stride: a 3x3 stride-2 layer with
padding 1 centres output ``j`` on input ``2 j``, a 2x2 stride-2 one (VGG's pools, DenseNet's
transitions, ConvNeXt's downsampling, ViT's patches) on ``2 j + 0.5``.

The main path is found by running the trunk once and keeping, in execution order, the layers
whose input is at the map's current resolution: a shortcut's strided 1x1 convolution (or
ResNet-D's average pool) runs after the block's strided convolution, on the previous
resolution, and is left out; squeeze-excitation convolutions see a 1x1 input and are left
out too. Layers with "same" padding at stride 1 move nothing. Padding chosen at run time
(timm's ``Conv2dSame``, TensorFlow-ported weights) is read as its declared 0, so those
offsets are off by up to half a stride; strides are exact.
"""

from __future__ import annotations

import torch
from torch import nn

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(value: int | tuple[int, ...]) -> int:
    return value[0] if isinstance(value, tuple) else value


def measure_cell_centres(trunk: nn.Module, size: tuple[int, int]) -> tuple[int, float]:
    """``(stride, offset)`` of ``trunk``'s output cells for an input of ``size`` (H, W),
    from one forward pass of a blank image (see the module doc).

    The stride is the input height over the output's; offsets follow the layers above.
    """
    layers: list[tuple[nn.Module, int, int]] = []  # (layer, input height, output height)

    def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        layers.append((layer, inputs[0].shape[-2], output.shape[-2]))

    handles = [m.register_forward_hook(record) for m in trunk.modules() if isinstance(m, _SPATIAL)]
    was_training = trunk.training
    try:
        param = next(trunk.parameters())
        blank = torch.zeros(1, 3, *size, device=param.device, dtype=param.dtype)
        with torch.no_grad():
            out = trunk.eval()(blank)
    finally:
        for handle in handles:
            handle.remove()
        trunk.train(was_training)
    height, stride, offset = size[0], 1, 0.0
    for layer, h_in, h_out in layers:
        if h_in != height:  # not on the main path (a shortcut, a squeeze-excitation)
            continue
        k, s, p = (_pair(getattr(layer, a)) for a in ("kernel_size", "stride", "padding"))
        k = _pair(getattr(layer, "dilation", 1)) * (k - 1) + 1
        offset += stride * ((k - 1) / 2 - p)
        stride *= s
        height = h_out
    total = size[0] // out.shape[-2]
    if stride != total:  # a strided step that is no convolution or pooling (Swin's merging)
        # non-overlapping 2x2 merges centre output j on 2 j + 0.5, as a 2x2 pool would
        factor = total // stride
        offset += stride * (factor - 1) / 2
        stride = total
    return stride, offset
