"""Argument checks shared by the meta-layer functions and the model factory."""

from __future__ import annotations

import torch


def check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


#: Newton-Schulz converges quadratically (the paper uses 3-5 iterations): more than this is a
#: typo, e.g. a hand-edited ``iterations: 1e9`` that would run for ever.
MAX_ITERATIONS = 100


def check_iterations(iterations: int) -> None:
    check_positive_int("iterations", iterations)
    if iterations > MAX_ITERATIONS:
        raise ValueError(f"iterations must be at most {MAX_ITERATIONS}, got {iterations!r}")


def check_square_batch(mat: torch.Tensor, name: str) -> None:
    if mat.dim() != 3 or mat.shape[1] != mat.shape[2]:
        raise ValueError(f"{name} expects (B, d, d) matrices, got {tuple(mat.shape)}")


def check_feature_map(x: torch.Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(
            f"{name} expects a feature map of shape (B, d, h, w), got {tuple(x.shape)}"
        )
    if x.shape[2] * x.shape[3] < 1:
        raise ValueError(f"{name} got an empty spatial map {tuple(x.shape)}")
