"""Row-major upper-triangle vectorization of symmetric matrices."""

from __future__ import annotations

import functools

import torch

from fgvc.ops.checks import check_square_batch


def triu_flat_index(d: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Flat indices (row * d + col, row <= col) in ``torch.triu_indices`` order.

    The order matters: the authors' classifier weights are laid out in it.
    """
    return _flat_index(d, torch.device(device))


def triu_position_index(d: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """For each entry (i, j) of a d x d matrix, row-major, the position of (min, max) in
    :func:`triu_vec`'s output: ``vec[:, index].view(B, d, d)`` mirrors the triangle."""
    return _position_index(d, torch.device(device))


@functools.cache
def _flat_index(d: int, device: torch.device) -> torch.Tensor:
    rows, cols = torch.triu_indices(d, d)
    return (rows * d + cols).to(device)


@functools.cache
def _position_index(d: int, device: torch.device) -> torch.Tensor:
    i = torch.arange(d)[:, None]
    j = torch.arange(d)[None, :]
    row, col = torch.minimum(i, j), torch.maximum(i, j)
    # rows before `row` hold d, d - 1, ... entries
    return (row * d - row * (row - 1) // 2 + col - row).reshape(-1).to(device)


def triu_vec(mat: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """(B, d, d) -> (B, d (d + 1) / 2), the upper triangle row by row.

    Args:
        mat: batch of square matrices.
        index: optional precomputed ``triu_flat_index(d)`` (a module buffer, e.g. for export).
    """
    check_square_batch(mat, "triu_vec")
    d = mat.shape[1]
    if index is None:
        index = triu_flat_index(d, mat.device)
    elif index.numel() != d * (d + 1) // 2:
        raise ValueError(
            f"triu_vec: index has {index.numel()} entries but d={d} needs {d * (d + 1) // 2}"
        )
    return mat.reshape(mat.shape[0], d * d).index_select(1, index)
