"""fgvc.models: construction, shapes, strides, init and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from fgvc.models import FGVCNet, build_model
from fgvc.models.trunks.resnet import TRUNK_CHILDREN
from fgvc.ops import ISqrtCov

BASIC = {"resnet18", "resnet34"}
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _input(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("representation", ["isqrt", "gap"])
@pytest.mark.parametrize("arch", RESNETS)
def test_every_arch_builds_and_runs(arch, representation):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, representation=representation, reduce_dim=16)
    assert isinstance(model, FGVCNet)
    assert (model.arch, model.representation, model.num_classes) == (arch, representation, 7)
    channels = 512 if arch in BASIC else 2048
    expected_dim = 16 * 17 // 2 if representation == "isqrt" else channels
    assert model.feature_dim == expected_dim
    assert model.classifier.in_features == expected_dim
    assert model.classifier.out_features == 7
    assert tuple(name for name, _ in model.backbone.named_children()) == TRUNK_CHILDREN
    with torch.no_grad():
        logits = model.eval()(_input())
    assert logits.shape == (2, 7)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_isqrt_head_structure():
    model = build_model("resnet50", num_classes=3)
    head = model.head
    assert isinstance(head.conv, nn.Conv2d) and head.conv.bias is None
    assert head.conv.in_channels == 2048 and head.conv.out_channels == 256
    assert head.conv.kernel_size == (1, 1)
    assert isinstance(head.bn, nn.BatchNorm2d) and head.bn.num_features == 256
    assert isinstance(head.relu, nn.ReLU)
    assert isinstance(head.pool, ISqrtCov) and head.pool.iterations == 5
    assert model.feature_dim == 32896  # the paper's "32K"
    assert model.classifier.weight.shape == (3, 32896)


@pytest.mark.parametrize(
    ("arch", "representation", "channels", "side"),
    [
        ("resnet50", "isqrt", 2048, 4),  # layer4 stride 1: total stride 16
        ("resnet50", "gap", 2048, 2),  # torchvision's stride 32
        ("resnet18", "isqrt", 512, 4),
        ("resnet18", "gap", 512, 2),
    ],
)
def test_backbone_stride(arch, representation, channels, side):
    model = build_model(arch, num_classes=2, representation=representation, reduce_dim=8)
    with torch.no_grad():
        fmap = model.backbone.eval()(_input())
    assert fmap.shape == (2, channels, side, side)


def test_last_stride_override_and_448_map():
    model = build_model("resnet18", num_classes=2, representation="isqrt", reduce_dim=8)
    with torch.no_grad():
        assert model.backbone.eval()(_input(1, 448)).shape[-2:] == (28, 28)  # the authors' map
    strided = build_model("resnet18", 2, "isqrt", reduce_dim=8, last_stride=2)
    plain = build_model("resnet18", 2, "gap", last_stride=1)
    with torch.no_grad():
        assert strided.backbone.eval()(_input()).shape[-2:] == (2, 2)
        assert plain.backbone.eval()(_input()).shape[-2:] == (4, 4)
    # The stride changes no parameter: checkpoints load across strides.
    shapes = {k: v.shape for k, v in model.backbone.state_dict().items()}
    assert shapes == {k: v.shape for k, v in strided.backbone.state_dict().items()}


def test_stride_one_block_matches_strided_block_at_even_positions():
    """Bottleneck stride sits on conv2 (3x3, pad 1) and on the 1x1 shortcut; everything after
    them in the block is pointwise, so the stride-1 block sampled at even positions must equal
    the stride-2 block. This checks both paths were changed, against torchvision's own block."""
    torch.manual_seed(0)
    ours = build_model("resnet50", 2, "isqrt", reduce_dim=8).backbone.layer4[0].eval()
    reference = torchvision.models.resnet50(weights=None).layer4[0].eval()
    reference.load_state_dict(ours.state_dict())
    assert reference.conv2.stride == (2, 2)
    x = torch.randn(2, 1024, 6, 6)
    with torch.no_grad():
        dense = ours(x)
        strided = reference(x)
    assert dense.shape == (2, 2048, 6, 6) and strided.shape == (2, 2048, 3, 3)
    torch.testing.assert_close(dense[..., ::2, ::2], strided, rtol=1e-5, atol=1e-5)


def test_gap_model_is_torchvision_resnet():
    """representation="gap" with last_stride 2 is exactly torchvision's ResNet (fc = classifier)."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    for module in tv.modules():  # non-trivial BN statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    model = build_model("resnet18", num_classes=5, representation="gap").eval()
    state = {("backbone." + k): v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    state["classifier.weight"] = tv.fc.weight.detach()
    state["classifier.bias"] = tv.fc.bias.detach()
    model.load_state_dict(state)
    x = _input()
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x))


def test_forward_features_and_backward_reaches_the_stem():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=4, reduce_dim=8).train()
    x = _input()
    assert model.forward_features(x).shape == (2, 36)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 3]))
    loss.backward()
    grad = model.backbone.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.head.conv.weight.grad.abs().sum() > 0


def test_fresh_init():
    torch.manual_seed(0)
    model = build_model("resnet50", num_classes=200)
    conv = model.head.conv.weight
    # kaiming_normal_(mode="fan_out", relu): std = sqrt(2 / (256 * 1 * 1))
    assert conv.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.02)
    assert conv.mean().abs().item() < 0.01 * math.sqrt(2 / 256) * 10
    assert torch.equal(model.head.bn.weight, torch.ones(256))
    assert torch.equal(model.head.bn.bias, torch.zeros(256))
    # classifier: nn.Linear's default, uniform on +-1/sqrt(fan_in)
    bound = 1 / math.sqrt(32896)
    weight = model.classifier.weight
    assert weight.abs().max().item() <= bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    # backbone: torchvision's init (He fan_out convs, BN 1/0)
    assert torch.equal(model.backbone.bn1.weight, torch.ones(64))
    stem = model.backbone.conv1.weight
    assert stem.std().item() == pytest.approx(math.sqrt(2 / (64 * 49)), rel=0.05)


def test_reset_classifier():
    model = build_model("resnet18", num_classes=4, representation="gap")
    model.reset_classifier(9)
    assert model.num_classes == 9 and model.classifier.weight.shape == (9, 512)
    with torch.no_grad():
        assert model.eval()(_input()).shape == (2, 9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "resnet99"}, r"resnet18, resnet34, resnet50, resnet101, resnet152"),
        ({"arch": "vgg19"}, r"unknown arch 'vgg19'"),
        ({"representation": "bilinear"}, r"representation 'bilinear'.*isqrt, gap"),
        ({"reduce_dim": 0}, r"reduce_dim must be an integer >= 1"),
        ({"head": {"iterations": 0}}, r"iterations must be an integer >= 1"),
        ({"num_classes": 0}, r"num_classes must be an integer >= 1"),
        ({"num_classes": True}, r"num_classes"),
        ({"last_stride": 3}, r"last_stride must be 1 or 2"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


def test_invalid_pretrained_type():
    with pytest.raises(TypeError, match="pretrained"):
        build_model("resnet18", pretrained=123)


def test_the_configured_iterations_reach_the_meta_layer():
    """A spec's Newton-Schulz iteration count decides the features: each equals the
    authors' formulation (float64) run for that count on the head's reduced map, and
    1 and 3 iterations (the default being 5) give different features from one network."""
    from fgvc.models.spec import NetSpec
    from fgvc.ops.reference import authors_isqrt_cov
    from fgvc.train.module import FGVCClassifier

    x = _input(2, 64)
    features = {}
    for iterations in (1, 3):
        torch.manual_seed(0)  # the same weights for both counts
        net = build_model(NetSpec("resnet18", 3, reduce_dim=8, head={"iterations": iterations}))
        net = net.eval()
        with torch.no_grad():
            got = net.forward_features(x)
            head = net.head
            reduced = head.relu(head.bn(head.conv(net.backbone(x))))
            expected = authors_isqrt_cov(reduced.double(), iterations)
        torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)
        features[iterations] = got
        # the training module's keyword reaches the same place
        torch.manual_seed(0)
        module = FGVCClassifier(
            arch="resnet18",
            num_classes=3,
            reduce_dim=8,
            head={"iterations": iterations},
            pretrained=None,
        ).eval()
        with torch.no_grad():
            torch.testing.assert_close(module.model.forward_features(x), got)
    assert (features[1] - features[3]).abs().max() > 1e-3
