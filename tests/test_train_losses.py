"""model.loss: ce, weighted and logit-adjusted cross-entropy against float64 hand computations
(plain Python arithmetic on lists, no torch), with and without label smoothing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from fgvc.errors import ConfigError
from fgvc.train.losses import (
    class_offsets,
    imbalance_loss,
    inverse_frequency_weights,
    log_prior,
    training_class_counts,
)

COUNTS = [40, 10, 5, 1]  # N = 56, C = 4


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    total = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - total for v in row]


def hand_loss(
    logits: list[list[float]],
    labels: list[int],
    weights: list[float] | None = None,
    offsets: list[float] | None = None,
    eps: float = 0.0,
) -> float:
    """sum_i sum_c q_ic w_c (-log p_ic) / sum_i w_{y_i}, p from logits + offsets."""
    classes = len(logits[0])
    weights = weights or [1.0] * classes
    offsets = offsets or [0.0] * classes
    total = norm = 0.0
    for row, label in zip(logits, labels):
        logp = log_softmax([v + o for v, o in zip(row, offsets)])
        for c in range(classes):
            q = (1 - eps) * (c == label) + eps / classes
            total -= q * weights[c] * logp[c]
        norm += weights[label]
    return total / norm


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, 4, generator=gen, dtype=torch.float64) * 3
    labels = torch.tensor([0, 0, 1, 3, 2, 0, 3])
    return logits, labels


def test_weights_are_inverse_frequency_with_mean_one_over_the_images():
    weights = inverse_frequency_weights(COUNTS)
    assert weights.dtype == torch.float64
    expected = [56 / (4 * n) for n in COUNTS]  # N / (C n_c)
    assert weights.tolist() == pytest.approx(expected, rel=1e-15)
    assert sum(w * n for w, n in zip(expected, COUNTS)) / 56 == pytest.approx(1.0)
    # a class without training images counts as one: finite weight and prior
    assert inverse_frequency_weights([3, 0]).tolist() == pytest.approx([4 / 6, 4 / 2])
    assert log_prior([3, 0]).tolist() == pytest.approx([math.log(3 / 4), math.log(1 / 4)])


def test_log_prior_is_the_log_of_the_class_frequencies():
    assert log_prior(COUNTS).tolist() == pytest.approx([math.log(n / 56) for n in COUNTS])
    tau = 0.7
    assert class_offsets("logit_adjusted", COUNTS, tau).tolist() == pytest.approx(
        [tau * math.log(n / 56) for n in COUNTS]
    )
    assert class_offsets("ce", COUNTS) is None


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_plain_cross_entropy(eps):
    logits, labels = batch()
    got = imbalance_loss(logits, labels, "ce", None, eps)
    assert float(got) == pytest.approx(hand_loss(logits.tolist(), labels.tolist(), eps=eps))


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_weighted_cross_entropy(eps):
    logits, labels = batch(1)
    weights = [56 / (4 * n) for n in COUNTS]
    offsets = class_offsets("weighted", COUNTS)
    got = imbalance_loss(logits, labels, "weighted", offsets, eps)
    want = hand_loss(logits.tolist(), labels.tolist(), weights=weights, eps=eps)
    assert float(got) == pytest.approx(want, rel=1e-12)
    assert float(got) != pytest.approx(hand_loss(logits.tolist(), labels.tolist(), eps=eps))


@pytest.mark.parametrize(("tau", "eps"), [(1.0, 0.0), (1.0, 0.2), (0.5, 0.1)])
def test_logit_adjusted_loss_adds_tau_log_prior_to_the_logits(tau, eps):
    logits, labels = batch(2)
    offsets = class_offsets("logit_adjusted", COUNTS, tau)
    got = imbalance_loss(logits, labels, "logit_adjusted", offsets, eps)
    prior = [tau * math.log(n / 56) for n in COUNTS]
    want = hand_loss(logits.tolist(), labels.tolist(), offsets=prior, eps=eps)
    assert float(got) == pytest.approx(want, rel=1e-12)
    # tau 0 is plain cross-entropy
    zero = imbalance_loss(
        logits, labels, "logit_adjusted", class_offsets("logit_adjusted", COUNTS, 0.0), eps
    )
    assert float(zero) == pytest.approx(hand_loss(logits.tolist(), labels.tolist(), eps=eps))


def test_logit_adjustment_pushes_toward_rare_classes():
    """Menon et al.'s point: on balanced logits the adjusted loss is larger for a frequent
    class's label and smaller for a rare one's, so training widens the rare classes' margins."""
    logits = torch.zeros(1, 4, dtype=torch.float64)
    offsets = class_offsets("logit_adjusted", COUNTS)
    frequent = imbalance_loss(logits, torch.tensor([0]), "logit_adjusted", offsets)
    rare = imbalance_loss(logits, torch.tensor([3]), "logit_adjusted", offsets)
    plain = imbalance_loss(logits, torch.tensor([0]), "ce")
    assert float(frequent) < float(plain) < float(rare)


def test_gradients_flow_and_dtype_follows_the_logits():
    logits, labels = batch(3)
    logits = logits.float().requires_grad_()
    for loss in ("weighted", "logit_adjusted"):
        value = imbalance_loss(logits, labels, loss, class_offsets(loss, COUNTS), 0.1)
        assert value.dtype == torch.float32
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_arguments_are_one_line():
    logits, labels = batch()
    with pytest.raises(
        ValueError, match=r"^loss 'focal': choose one of ce, weighted, logit_adjusted$"
    ):
        class_offsets("focal", COUNTS)
    with pytest.raises(ValueError, match=r"needs one value per class \(4\), got \(3,\)"):
        imbalance_loss(logits, labels, "weighted", torch.ones(3))
    with pytest.raises(ValueError, match="needs one value per class"):
        imbalance_loss(logits, labels, "logit_adjusted", None)
    with pytest.raises(ValueError, match="counts >= 0"):
        inverse_frequency_weights([3, -1])


def test_class_counts_come_from_the_datamodule_by_name():
    datamodule = SimpleNamespace(train_class_counts=lambda: [3, 1, 2])
    assert training_class_counts(datamodule, 3, "weighted") == [3, 1, 2]
    with pytest.raises(ConfigError, match=r"^model.loss weighted needs .* SimpleNamespace has no"):
        training_class_counts(SimpleNamespace(), 3, "weighted")
    with pytest.raises(ConfigError, match="the run has no DataModule"):
        training_class_counts(None, 3, "logit_adjusted")
    with pytest.raises(ConfigError, match="training split has 3 classes, model.num_classes is 4"):
        training_class_counts(datamodule, 4, "weighted")
