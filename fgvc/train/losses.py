"""Training losses for imbalanced classes (``model.loss``), as pure functions.

With ``n_c`` training images of class ``c``, ``N = sum_c n_c`` and ``C`` classes (a class
without training images counts as one image, so that every quantity stays finite):

* ``ce``: cross-entropy.
* ``weighted``: cross-entropy with class weights ``w_c = N / (C * n_c)``, inversely
  proportional to the class frequency and normalized so that the training images' mean
  weight is 1 (scikit-learn's ``class_weight="balanced"``). A batch's loss is the weighted
  mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (PyTorch's ``weight=`` semantics), so a batch
  of rare classes does not simply weigh more: within a batch, each rare image counts more.
* ``logit_adjusted``: the logit-adjusted loss of Menon et al., "Long-tail learning via logit
  adjustment", ICLR 2021: cross-entropy of ``logits + tau * log(pi)`` with the class prior
  ``pi_c = n_c / N``. Only training adds the offset; predictions use the plain logits,
  which then estimate the balanced (class-uniform) posterior.

Label smoothing ``eps`` applies to all three as in :func:`torch.nn.functional.cross_entropy`:
the target is ``q_ic = (1 - eps) [c = y_i] + eps / C``; ``weighted`` gives image ``i`` the
loss ``-sum_c q_ic w_c log p_ic``, still divided by ``sum_i w_{y_i}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from fgvc.errors import ConfigError

#: ``model.loss`` values
LOSSES = ("ce", "weighted", "logit_adjusted")
Loss = Literal["ce", "weighted", "logit_adjusted"]


def _counts(class_counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() == 0 or bool((counts < 0).any()):
        raise ValueError(f"class counts must be a non-empty list of counts >= 0, got {counts}")
    return counts.clamp(min=1.0)


def inverse_frequency_weights(class_counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``w_c = N / (C * n_c)`` (float64): the mean weight over the training images is 1."""
    counts = _counts(class_counts)
    return counts.sum() / (counts.numel() * counts)


def log_prior(class_counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``log(n_c / N)`` (float64), the logit adjustment's offset for ``tau = 1``."""
    counts = _counts(class_counts)
    return (counts / counts.sum()).log()


def training_class_counts(datamodule: Any, num_classes: int, loss: str) -> list[int]:
    """Training images per class from the DataModule's ``train_class_counts()`` (an fgvc
    DataModule's, after its ``setup``; asked by name, since fgvc.train sits above fgvc.data).

    Raises:
        ConfigError: the DataModule cannot tell, or tells another number of classes.
    """
    method = getattr(datamodule, "train_class_counts", None)
    if method is None:
        what = type(datamodule).__name__ + " has no train_class_counts()"
        raise ConfigError(
            f"model.loss {loss} needs the training split's class counts and "
            f"{'the run has no DataModule' if datamodule is None else what}; use an fgvc "
            f"DataModule or model.loss ce"
        )
    counts = [int(n) for n in method()]
    if len(counts) != num_classes:
        raise ConfigError(
            f"the training split has {len(counts)} classes, model.num_classes is {num_classes}"
        )
    return counts


def class_offsets(
    loss: str, class_counts: Sequence[int] | torch.Tensor, tau: float = 1.0
) -> torch.Tensor | None:
    """What :func:`imbalance_loss` needs besides the batch: the class weights (``weighted``),
    ``tau * log prior`` (``logit_adjusted``), or None (``ce``)."""
    if loss == "weighted":
        return inverse_frequency_weights(class_counts)
    if loss == "logit_adjusted":
        return tau * log_prior(class_counts)
    if loss != "ce":
        raise ValueError(f"loss {loss!r}: choose one of {', '.join(LOSSES)}")
    return None


def imbalance_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss: str = "ce",
    offsets: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The batch's mean training loss ``loss`` (see the module docstring); ``offsets`` is
    :func:`class_offsets`'s result for this loss, cast to the logits' dtype and device."""
    weight = None
    if loss in ("weighted", "logit_adjusted"):
        if offsets is None or offsets.shape != logits.shape[-1:]:
            raise ValueError(
                f"loss {loss} needs one value per class ({logits.shape[-1]}), got "
                f"{None if offsets is None else tuple(offsets.shape)}"
            )
        offsets = offsets.to(logits.dtype)
        if loss == "weighted":
            weight = offsets
        else:
            logits = logits + offsets
    return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)
