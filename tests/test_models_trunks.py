"""fgvc.models.trunks: each family's entry agrees with its library's own forward pass, every
norm and bias skips weight decay, freezing stops every norm, Grad-CAM's geometry follows the
trunk's stride, and ImageNet weights resolve (names, preprocessing, local files, offline)."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from fgvc.errors import DownloadError
from fgvc.models import NetSpec, build_model
from fgvc.models.trunks import TRUNKS, trunk_entry
from fgvc.models.trunks.densenet import fix_old_keys
from fgvc.models.trunks.norms import is_norm
from fgvc.train.optim import parameter_groups

#: One of each family (small ones), with a last stride each accepts.
FAMILIES = [
    ("resnet18", 1),
    ("vgg16_bn", 1),
    ("densenet121", 2),
    ("timm/convnext_atto", 2),
    ("timm/convnext_atto", 1),
    ("timm/deit_tiny_patch16_224", 1),
]


def _x(size: int = 64, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _trunk(arch: str, last_stride: int) -> nn.Module:
    torch.manual_seed(0)
    return trunk_entry(arch).build(last_stride).eval()


@pytest.mark.parametrize(("arch", "last_stride"), FAMILIES)
def test_entry_channels_and_stride_are_what_the_forward_pass_gives(arch, last_stride):
    entry = trunk_entry(arch)
    trunk = _trunk(arch, last_stride)
    with torch.no_grad():
        out = trunk(_x(64))
    stride = entry.stride(last_stride)
    assert out.shape == (2, entry.channels, 64 // stride, 64 // stride)
    assert (trunk.out_channels, trunk.stride) == (entry.channels, stride)


def _same_weights(reference: nn.Module, part: nn.Module, skip: str = "fc.") -> None:
    """Copy ``reference``'s weights (and BN statistics, randomized) into ``part``."""
    for buf in (b for n, b in reference.named_buffers() if n.endswith("running_var")):
        buf.uniform_(0.5, 1.5)
    part.load_state_dict(
        {k: v for k, v in reference.state_dict().items() if not k.startswith(skip)}
    )


def test_resnet_trunk_is_torchvisions_stem_to_layer4():
    net = torchvision.models.resnet50(weights=None).eval()
    trunk = _trunk("resnet50", 2)
    _same_weights(net, trunk)
    x = _x(64)
    with torch.no_grad():
        expected = net.layer4(
            net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))))
        )
        assert torch.allclose(trunk(x), expected, atol=1e-5)


def test_vgg16_bn_trunk_is_torchvisions_features_without_the_last_pool():
    """The authors' MPN-COV VGG-D: conv5_3 + ReLU at stride 16, 512 channels."""
    net = torchvision.models.vgg16_bn(weights=None).eval()
    trunk = _trunk("vgg16_bn", 1)
    _same_weights(net.features, trunk.features)
    x = _x(64)
    with torch.no_grad():
        assert torch.equal(trunk(x), net.features[:-1](x))
        assert trunk(x).shape == (2, 512, 4, 4)
    # last_stride 2 keeps the pool: torchvision's features whole, same keys
    pooled = _trunk("vgg16_bn", 2)
    pooled.load_state_dict(trunk.state_dict())
    with torch.no_grad():
        assert torch.equal(pooled(x), net.features(x))


@pytest.mark.parametrize("last_stride", [1, 2])
def test_densenet_trunk_is_torchvisions_features_and_relu(last_stride):
    net = torchvision.models.densenet121(weights=None).eval()
    trunk = _trunk("densenet121", last_stride)
    _same_weights(net.features, trunk.features)
    x = _x(64)
    with torch.no_grad():
        out = trunk(x)
        if last_stride == 2:
            assert torch.allclose(out, torch.relu(net.features(x)), atol=1e-6)
        else:  # transition3 keeps its resolution: denseblock4 at stride 16
            f = net.features
            y = x
            for name, layer in f.named_children():
                y = layer.conv(layer.relu(layer.norm(y))) if name == "transition3" else layer(y)
            assert torch.allclose(out, torch.relu(y), atol=1e-6)
    assert out.shape[-1] == 64 // (16 * last_stride)


def test_timm_cnn_trunk_is_timms_last_stage():
    """timm's full model (same init, same seed) gives the same last-stage map."""
    trunk = _trunk("timm/convnext_atto", 2)
    torch.manual_seed(0)
    full = timm.create_model("convnext_atto").eval()
    x = _x(64)
    with torch.no_grad():
        assert torch.allclose(trunk(x), full.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("arch", ["timm/deit_tiny_patch16_224", "timm/vit_tiny_patch16_224"])
def test_vit_trunk_is_its_patch_tokens_as_a_map(arch):
    """timm's own NCHW intermediates (prefix tokens dropped, final norm applied)."""
    trunk = _trunk(arch, 1)
    x = _x(64)
    with torch.no_grad():
        (expected,) = trunk.model.forward_intermediates(
            x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        assert torch.allclose(trunk(x), expected, atol=1e-5)
    assert expected.shape == (2, 192, 4, 4)


def test_swin_trunk_permutes_its_nhwc_map():
    entry = trunk_entry("timm/swin_tiny_patch4_window7_224")
    assert (entry.channels, dict(entry.strides)) == (768, {2: 32})
    trunk = _trunk(entry.name, 2)
    x = _x(224, batch=1)
    with torch.no_grad():
        nhwc = trunk.model.forward_features(x)
        assert torch.equal(trunk(x), nhwc.permute(0, 3, 1, 2))
    assert nhwc.shape == (1, 7, 7, 768)


def test_last_stride_defaults_and_refusals():
    assert NetSpec("vgg16_bn", 3).last_stride == 1
    assert NetSpec("timm/deit_tiny_patch16_224", 3, "gap").last_stride == 1  # its only value
    assert NetSpec("timm/swin_tiny_patch4_window7_224", 3).last_stride == 2
    with pytest.raises(ValueError, match=r"last_stride must be 1 for timm/deit.*patch stride"):
        NetSpec("timm/deit_tiny_patch16_224", 3, reduce_dim=8, last_stride=2)
    # the default reduction is at most the trunk's channels (DeiT-Tiny: 192)
    assert NetSpec("timm/deit_tiny_patch16_224", 3).reduce_dim == 192
    with pytest.raises(ValueError, match=r"timm has no model 'no_such_net'"):
        NetSpec("timm/no_such_net", 3)
    with pytest.raises(ValueError, match=r"unknown arch 'vgg19'.*timm/<"):
        NetSpec("vgg19", 3)
    with pytest.raises(ValueError, match=r"reduce_dim must be at most 512"):
        NetSpec("vgg16", 3, reduce_dim=1024)


# ------------------------------------------------------------------ weight decay, freezing
@pytest.mark.parametrize("arch", ["timm/deit_tiny_patch16_224", "timm/convnext_atto", "vgg16_bn"])
def test_every_norm_and_bias_gets_no_weight_decay(arch):
    net = build_model(arch, 3, "isqrt", reduce_dim=8)
    groups = parameter_groups(net, 0.1, 1e-4, {"backbone": 1, "head": 1, "classifier": 1})
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    norms = [m for m in net.modules() if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d))]
    assert norms
    if arch.startswith("timm/deit"):
        assert any(isinstance(m, nn.LayerNorm) for m in norms)
        assert id(net.backbone.model.pos_embed) in no_decay  # timm's own list
    for module in norms:
        assert all(id(p) in no_decay for p in module.parameters(recurse=False))
    for name, p in net.named_parameters():
        if name.endswith(".bias"):
            assert id(p) in no_decay, name
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert id(module.weight) in decay
    assert len(no_decay) + len(decay) == len(list(net.parameters()))


@pytest.mark.parametrize("arch", ["timm/deit_tiny_patch16_224", "timm/convnext_atto", "resnet18"])
def test_freezing_puts_every_norm_in_eval(arch):
    trunk = trunk_entry(arch).build(trunk_entry(arch).default_last_stride(1)).train()
    kinds = {type(m) for m in trunk.modules() if is_norm(m)}
    assert kinds
    trunk.set_frozen(True)
    for m in trunk.modules():
        assert m.training is not is_norm(m), type(m)
    trunk.set_frozen(False)
    assert all(m.training for m in trunk.modules())


# ------------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize(
    ("arch", "last_stride", "offset"),
    [
        ("resnet18", 1, 0.0),  # 3x3 stride-2 layers with padding 1 centre j on 2 j
        ("vgg16_bn", 1, 7.5),  # four 2x2 pools: 0.5 (1 + 2 + 4 + 8)
        ("vgg16", 2, 15.5),
        ("densenet121", 2, 14.0),  # stride-2 stem layers (0), then 2x2 pools at 4, 8, 16
        ("timm/convnext_atto", 2, 15.5),  # 4x4 stem: 1.5, then 2x2 convs at 4, 8, 16
        ("timm/deit_tiny_patch16_224", 1, 7.5),  # 16x16 patches
    ],
)
def test_gradcam_geometry_follows_the_trunk(arch, last_stride, offset):
    from fgvc.deploy.explain import cell_centres, target_layer

    net = build_model(arch, 3, "isqrt", reduce_dim=8, last_stride=last_stride).eval()
    stride, measured = cell_centres(net.backbone, (64, 64))
    assert (stride, measured) == (trunk_entry(arch).stride(last_stride), offset)
    seen = []
    handle = target_layer(net).register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        net(_x(64, batch=1))
    handle.remove()
    assert seen == [(1, trunk_entry(arch).channels, 64 // stride, 64 // stride)]


# -------------------------------------------------------------------------------- weights
def test_weights_carry_the_libraries_preprocessing():
    v2 = trunk_entry("resnet50").weights("IMAGENET1K_V2")
    assert (v2.resize, v2.crop, v2.interpolation, v2.top1) == (232, 224, "bilinear", 80.858)
    v1 = trunk_entry("resnet50").weights(None)
    assert (v1.name, v1.resize, v1.crop, v1.top1) == ("IMAGENET1K_V1", 256, 224, 76.13)
    assert v1.mean == (0.485, 0.456, 0.406) and v1.std == (0.229, 0.224, 0.225)
    cnx = trunk_entry("timm/convnext_atto").weights(None)
    assert (cnx.name, cnx.crop, cnx.resize, cnx.interpolation) == (
        "convnext_atto.d2_in1k",
        224,
        256,  # 224 / crop_pct 0.875
        "bicubic",
    )
    with pytest.raises(ValueError, match=r"no weights 'IMAGENET1K_V9'.*IMAGENET1K_V2"):
        trunk_entry("resnet50").weights("IMAGENET1K_V9")
    with pytest.raises(ValueError, match=r"no pretrained weights 'convnext_atto.nope'.*d2_in1k"):
        trunk_entry("timm/convnext_atto").weights("nope")
    assert set(TRUNKS) >= {"resnet18", "resnet152", "vgg16", "vgg16_bn", "densenet161"}


def test_torchvision_weights_from_a_local_file(tmp_path):
    torch.manual_seed(3)
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    net = build_model("resnet18", 3, reduce_dim=8, pretrained=f"imagenet:{tmp_path / 'r18.pth'}")
    for key, value in tv.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(net.state_dict()[f"backbone.{key}"], value), key


def test_densenet_old_key_names_are_renamed():
    old = {"features.denseblock1.denselayer1.norm.1.weight": 1, "features.norm5.bias": 2}
    assert fix_old_keys(old) == {
        "features.denseblock1.denselayer1.norm1.weight": 1,
        "features.norm5.bias": 2,
    }


def test_timm_weights_from_a_local_file(tmp_path):
    """A timm weights file (the full model's layout) loads into the features_only trunk."""
    from safetensors.torch import save_file

    torch.manual_seed(4)
    full = timm.create_model("convnext_atto")
    save_file(full.state_dict(), str(tmp_path / "model.safetensors"))
    net = build_model(
        "timm/convnext_atto",
        3,
        reduce_dim=8,
        last_stride=2,
        pretrained=f"imagenet:{tmp_path}/model.safetensors",
    ).eval()
    x = _x(64)
    with torch.no_grad():
        assert torch.allclose(net.backbone(x), full.eval().forward_features(x), atol=1e-5)


def test_timm_offline_is_one_line_naming_model_cache_and_override(monkeypatch):
    real = timm.create_model

    def offline(name, *args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(DownloadError) as info:
        build_model("timm/convnext_atto", 3, reduce_dim=8, pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    from huggingface_hub import constants

    for part in ("convnext_atto.d2_in1k", "timm/convnext_atto.d2_in1k", constants.HF_HUB_CACHE):
        assert part in message
    assert "imagenet:/path/to/model.safetensors" in message
