"""The head table: every entry builds the module NetSpec describes, and each head is its
pooling op after the shared reduction, in full precision under autocast."""

from __future__ import annotations

import pytest
import torch

from fgvc.models import HEADS, NetSpec, build_model
from fgvc.models.heads import head_entry
from fgvc.ops import isqrt_cov
from fgvc.ops.bilinear import bilinear_pool
from fgvc.ops.eig_sqrtm import mpn_cov
from fgvc.ops.sketch import compact_bilinear_pool

TINY = {"cbp": {"projection_dim": 64}}


def _spec(representation: str, **fields) -> NetSpec:
    return NetSpec("resnet18", 3, representation, head=TINY.get(representation), **fields)


def _pooled(head: torch.nn.Module, representation: str, x: torch.Tensor) -> torch.Tensor:
    """The head's op, called directly on the reduced map."""
    y = head.reduce(x) if hasattr(head, "reduce") else x
    if representation == "isqrt":
        return isqrt_cov(y, head.iterations)
    if representation == "mpncov":
        return mpn_cov(y)
    if representation == "bcnn":
        return bilinear_pool(y)
    if representation == "cbp":
        p = head.pool
        return compact_bilinear_pool(y, p.h1, p.s1, p.h2, p.s2, p.projection_dim)
    return y.mean((2, 3))


def test_the_table_names_the_five_heads_and_the_cli_offers_them():
    from typing import get_args, get_type_hints

    from fgvc.train.module import FGVCClassifier

    assert list(HEADS) == ["isqrt", "gap", "mpncov", "bcnn", "cbp"]
    hint = get_type_hints(FGVCClassifier.__init__)["representation"]
    assert get_args(hint) == tuple(HEADS)
    with pytest.raises(ValueError, match="unknown representation 'bilinear'.*isqrt, gap, mpncov"):
        head_entry("bilinear")


@pytest.mark.parametrize("representation", list(HEADS))
@pytest.mark.parametrize("reduce_dim", [8, None])
def test_each_head_is_its_op_after_the_reduction(representation, reduce_dim):
    spec = _spec(representation, reduce_dim=reduce_dim)
    torch.manual_seed(0)
    net = build_model(spec).double().eval()
    assert net.spec == spec and net.feature_dim == spec.feature_dim
    has_reduction = reduce_dim is not None and HEADS[representation].reduces
    assert (getattr(net.head, "conv", None) is not None) == has_reduction
    x = torch.randn(2, 512, 3, 3, dtype=torch.float64).relu()
    out = net.head(x)
    assert out.shape == (2, spec.feature_dim) and out.dtype == torch.float64
    torch.testing.assert_close(out, _pooled(net.head, representation, x))


@pytest.mark.parametrize("representation", list(HEADS))
def test_autocast_gives_float32_second_order_features_and_gradients_reach_the_trunk(representation):
    torch.manual_seed(0)
    net = build_model(_spec(representation, reduce_dim=8)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = net.forward_features(torch.randn(2, 3, 32, 32))
        logits = net(torch.randn(2, 3, 32, 32))
    # the second-order heads pool in float32; an average needs no more than autocast's type
    expected = torch.bfloat16 if representation == "gap" else torch.float32
    assert features.dtype == expected and torch.isfinite(features).all()
    logits.float().sum().backward()
    grad = net.backbone.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_cbp_hashes_travel_with_the_weights():
    """A loaded CBP model is the same function even when built with another seed."""
    a = build_model(_spec("cbp")).eval()
    b = build_model(NetSpec("resnet18", 3, "cbp", head={"projection_dim": 64, "seed": 1})).eval()
    assert not torch.equal(a.head.pool.h1, b.head.pool.h1)
    assert {"head.pool.h1", "head.pool.s1", "head.pool.h2", "head.pool.s2"} <= set(a.state_dict())
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x))
