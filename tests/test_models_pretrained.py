"""fgvc.models pretrained weights: the authors' layout, fgvc's formats, safety, downloads.

Checkpoints here are built from key names alone (torchvision's ResNet keys plus the
authors' layer_reduce / layer_reduce_bn / fc, the key layout the authors published) and
filled with random values; nothing touches the internet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import urllib.request

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import torchvision

import fgvc.utils.download
from fgvc.models import (
    AUTHORS_CHECKPOINTS,
    AuthorsCheckpoint,
    CheckpointError,
    build_model,
    convert_authors_state_dict,
    read_checkpoint,
)
from fgvc.models.authors import AUTHORS_REPO
from fgvc.models.pretrained import PretrainedFile, load_pretrained
from fgvc.utils.download import DownloadError
from tests.cli_helpers import CodePayload

# ---------------------------------------------------------------------------------------------
# checkpoints in the authors' layout, random values


def authors_state_dict(
    arch: str, num_classes: int, reduce_dim: int = 256, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Keys of the authors' MPNCOVResNet: torchvision trunk + layer_reduce(_bn) + fc."""
    gen = torch.Generator().manual_seed(seed)
    trunk = getattr(torchvision.models, arch)(weights=None).state_dict()
    channels = trunk["fc.weight"].shape[1]
    shapes = {k: v.shape for k, v in trunk.items() if not k.startswith("fc.")}
    shapes["layer_reduce.weight"] = torch.Size([reduce_dim, channels, 1, 1])
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"layer_reduce_bn.{name}"] = torch.Size([reduce_dim])
    shapes["layer_reduce_bn.num_batches_tracked"] = torch.Size([])
    shapes["fc.weight"] = torch.Size([num_classes, reduce_dim * (reduce_dim + 1) // 2])
    shapes["fc.bias"] = torch.Size([num_classes])
    return {k: _random(k, s, gen) for k, s in shapes.items()}


def _random(key: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    if key.endswith("num_batches_tracked"):
        return torch.randint(1, 10_000, shape, generator=gen)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=gen) + 0.5
    if len(shape) == 4:  # convolutions, He-like scale keeps the activations O(1)
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=gen) * math.sqrt(2.0 / fan_in)
    if key.startswith("fc.") and key.endswith("weight"):
        return torch.randn(shape, generator=gen) * 0.01
    if key.endswith("weight"):  # BN scale
        return torch.rand(shape, generator=gen) + 0.5
    return torch.randn(shape, generator=gen) * 0.1  # BN shift and running mean, fc bias


# ---------------------------------------------------------------------------------------------
# an independent float64 forward of the authors' network, straight from the tensors


def _bn(x, sd, prefix):
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=1e-5,
    )


def _bottleneck(x, sd, p, stride):
    out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
    out = F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1)
    out = F.relu(_bn(out, sd, f"{p}.bn2"))
    out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
    if f"{p}.downsample.0.weight" in sd:
        x = F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride)
        x = _bn(x, sd, f"{p}.downsample.1")
    return F.relu(out + x)


def _meta_layer(x, iterations):
    """iSQRT-COV as written in the design note, sections 1-5."""
    b, d, h, w = x.shape
    m = h * w
    feats = x.reshape(b, d, m)
    centred = feats - feats.mean(dim=2, keepdim=True)
    sigma = centred @ centred.transpose(1, 2) / m
    trace = sigma.diagonal(dim1=1, dim2=2).sum(1)[:, None, None]
    a = sigma / trace
    eye = torch.eye(d, dtype=x.dtype).expand(b, d, d)
    y, z = a, eye
    for _ in range(iterations - 1):
        t = (3 * eye - z @ y) / 2
        y, z = y @ t, t @ z
    y = y @ (3 * eye - z @ y) / 2
    c = torch.sqrt(trace) * y
    rows, cols = torch.triu_indices(d, d)
    return c[:, rows, cols]


def reference_forward(sd, x, iterations=5):
    """The authors' MPNCOVResNet (bottleneck) in eval mode: layer4 with stride 1."""
    sd = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(x, sd["conv1.weight"], stride=2, padding=3)
    x = F.max_pool2d(F.relu(_bn(x, sd, "bn1")), kernel_size=3, stride=2, padding=1)
    for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 1)):
        blocks = sorted({int(k.split(".")[1]) for k in sd if k.startswith(layer + ".")})
        for i in blocks:
            x = _bottleneck(x, sd, f"{layer}.{i}", stride if i == 0 else 1)
    x = F.relu(_bn(F.conv2d(x, sd["layer_reduce.weight"]), sd, "layer_reduce_bn"))
    return F.linear(_meta_layer(x, iterations), sd["fc.weight"], sd["fc.bias"])


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def authors_resnet50(tmp_path_factory):
    """The real ResNet-50 layout (2048 -> 256 reduction, 32,896 features), 10 classes."""
    sd = authors_state_dict("resnet50", num_classes=10)
    path = tmp_path_factory.mktemp("authors") / "mpncovresnet50-random.pth"
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def small_sd():
    """The authors' layout on ResNet-18 with a 16-channel reduction: quick to save and load."""
    return authors_state_dict("resnet18", num_classes=10, reduce_dim=16, seed=1)


def _small_model(**kwargs):
    kwargs = {"num_classes": 10, "reduce_dim": 16, **kwargs}
    return build_model("resnet18", **kwargs)


def _assert_loaded(model, sd):
    """Every tensor of the authors' dict sits at its converted key in the model."""
    own = model.state_dict()
    for key, value in convert_authors_state_dict(sd).items():
        assert torch.equal(own[key], value.to(own[key].dtype)), key


def _x(size=64):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch.hub's cache in tmp (what torch.hub.set_dir does, undone afterwards)."""
    path = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(path))
    return path


@pytest.fixture
def no_network(monkeypatch, dead_url):
    """torch.hub's downloads go to a loopback port where nothing listens."""
    real_urlopen = urllib.request.urlopen
    calls = []

    def urlopen(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        return real_urlopen(dead_url, timeout=5)

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    return calls


# ---------------------------------------------------------------------------------------------
# the authors' layout


def test_authors_resnet50_matches_independent_float64_forward(authors_resnet50):
    path, sd = authors_resnet50
    model = build_model("resnet50", num_classes=10, pretrained=path)
    _assert_loaded(model, sd)
    model = model.double().eval()
    x = _x().double()
    with torch.no_grad():
        logits = model(x)
        expected = reference_forward(sd, x)
    assert logits.dtype == torch.float64
    assert expected.std() > 0 and torch.isfinite(expected).all()
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-9 * expected.abs().max())


def test_convert_authors_state_dict_keys():
    sd = {
        "module.conv1.weight": torch.zeros(1),
        "module.layer4.0.downsample.1.running_var": torch.zeros(1),
        "module.layer_reduce.weight": torch.zeros(1),
        "module.layer_reduce_bn.bias": torch.zeros(1),
        "module.fc.weight": torch.zeros(1),
        "module.something_else": torch.zeros(1),
    }
    assert list(convert_authors_state_dict(sd)) == [
        "backbone.conv1.weight",
        "backbone.layer4.0.downsample.1.running_var",
        "head.conv.weight",
        "head.bn.bias",
        "classifier.weight",
        "something_else",  # unknown keys are kept so that loading reports them
    ]


@pytest.mark.parametrize("wrapping", ["module", "state_dict", "both", "legacy_format"])
def test_authors_wrappers(tmp_path, small_sd, wrapping):
    obj = small_sd
    if wrapping in ("module", "both"):
        obj = {f"module.{k}": v for k, v in obj.items()}
    if wrapping in ("state_dict", "both"):
        obj = {"state_dict": obj, "epoch": 90, "best_prec1": 78.3, "arch": "mpncovresnet18"}
    path = tmp_path / "ckpt.pth.tar"
    # The published files date from 2018: torch.save's pre-zip format must load too.
    torch.save(obj, path, _use_new_zipfile_serialization=wrapping != "legacy_format")
    _assert_loaded(_small_model(pretrained=path), small_sd)


def test_authors_without_num_batches_tracked(tmp_path, small_sd):
    """PyTorch < 0.4 checkpoints have no BN counters; they do not change any output."""
    sd = {k: v for k, v in small_sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pth")
    _assert_loaded(_small_model(pretrained=tmp_path / "old.pth"), sd)


def test_class_count_mismatch_reinitializes_only_the_classifier(tmp_path, small_sd, caplog):
    path = tmp_path / "ckpt.pth"
    torch.save(small_sd, path)
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="fgvc.models"):
        model = _small_model(num_classes=7, pretrained=path)
    lines = [r for r in caplog.records if "classifier" in r.getMessage()]
    assert len(lines) == 1
    assert "10 classes" in lines[0].getMessage() and "7" in lines[0].getMessage()
    own = model.state_dict()
    assert torch.equal(own["backbone.layer3.1.conv2.weight"], small_sd["layer3.1.conv2.weight"])
    assert torch.equal(own["head.bn.running_var"], small_sd["layer_reduce_bn.running_var"])
    weight = model.classifier.weight
    assert weight.shape == (7, 136)
    bound = 1 / math.sqrt(136)  # nn.Linear's fresh init, not the checkpoint's N(0, 0.01)
    assert weight.abs().max() <= bound and weight.std() > 0.03
    with torch.no_grad():
        assert model.eval()(_x()).shape == (2, 7)


def _mismatch(tmp_path, sd, **model_kwargs):
    path = tmp_path / "bad-checkpoint.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError) as info:
        _small_model(pretrained=path, **model_kwargs)
    assert isinstance(info.value, CheckpointError)
    assert str(path) in str(info.value)
    return str(info.value)


def test_missing_key_is_named(tmp_path, small_sd):
    sd = {k: v for k, v in small_sd.items() if k not in ("layer_reduce_bn.weight", "bn1.bias")}
    message = _mismatch(tmp_path, sd)
    assert "missing keys (2)" in message
    assert "head.bn.weight" in message and "backbone.bn1.bias" in message


def test_wrong_shape_is_named(tmp_path, small_sd):
    sd = dict(small_sd)
    sd["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    message = _mismatch(tmp_path, sd)
    assert "shape mismatches (1)" in message
    assert "backbone.layer2.0.conv1.weight (checkpoint (128, 64, 5, 5), model (128, 64, 3, 3))" in (
        message
    )


def test_extra_key_is_named(tmp_path, small_sd):
    sd = {**small_sd, "layer_extra.weight": torch.zeros(3)}
    message = _mismatch(tmp_path, sd)
    assert "unexpected keys (1): layer_extra.weight" in message


def test_other_reduce_dim_is_a_mismatch_not_a_new_classifier(tmp_path, small_sd):
    message = _mismatch(tmp_path, small_sd, reduce_dim=8)
    assert "head.conv.weight" in message and "classifier.weight" in message


def test_long_key_lists_are_truncated(tmp_path, small_sd):
    """A ResNet-18 checkpoint for a ResNet-34 model: dozens of missing keys, ten shown."""
    path = tmp_path / "r18.pth"
    torch.save(small_sd, path)
    with pytest.raises(CheckpointError) as info:
        build_model("resnet34", num_classes=10, reduce_dim=16, pretrained=path)
    message = str(info.value)
    missing = message.split("missing keys (")[1]
    count = int(missing.split(")")[0])
    assert count > 30
    assert f"... and {count - 10} more" in message
    assert len(message) < 2000


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("resnet18", pretrained=path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("resnet18", pretrained=str(path))


def test_unreadable_files_are_refused_by_name(tmp_path, small_sd):
    whole = tmp_path / "whole.pth"
    torch.save(dict(small_sd), whole)
    legacy = tmp_path / "legacy.pth"
    torch.save(dict(small_sd), legacy, _use_new_zipfile_serialization=False)
    files = {
        "empty.pth": b"",
        "text.pth": b"hello, not a checkpoint",
        "truncated.pth": whole.read_bytes()[: whole.stat().st_size // 2],
        "legacy-truncated.pth": legacy.read_bytes()[: legacy.stat().st_size // 2],
        "bad.safetensors": b"12345678 not safetensors",
    }
    foreign = {  # files users mistake for checkpoints: the unpickler meets them with IndexError
        "passwd": b"root:x:0:0:root:/root:/bin/bash\n",
        "weights.rar": b"Rar!\x1a\x07\x01\x00" + bytes(range(256)),
    }
    for name, data in foreign.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="it is not a checkpoint") as info:
            read_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and ".safetensors file" in str(info.value)
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        for mmap in (False, True):
            with pytest.raises(CheckpointError, match="truncated or not a checkpoint") as info:
                read_checkpoint(path, mmap=mmap)
            assert str(path) in str(info.value), name
        with pytest.raises(CheckpointError, match=name):
            _small_model(pretrained=path)
    assert read_checkpoint(legacy, mmap=True).keys() == small_sd.keys()  # read in full


def test_torchvision_resnet_file_loads_into_gap_model(tmp_path):
    """A plain torchvision ResNet state dict is the authors' trunk layout; fc -> classifier."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None, num_classes=6).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = build_model("resnet18", 6, "gap", pretrained=tmp_path / "tv.pth").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(_x()), tv(_x()))


# ---------------------------------------------------------------------------------------------
# fgvc's own formats


def _trained_model():
    torch.manual_seed(3)
    model = _small_model(num_classes=5)
    with torch.no_grad():  # non-default BN statistics and counters, as after training
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(42)
    return model.eval()


@pytest.mark.parametrize("fmt", ["state_dict", "lightning", "safetensors", "ddp"])
def test_own_formats_round_trip(tmp_path, fmt):
    model = _trained_model()
    state = model.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "model.safetensors"
        safetensors.torch.save_file(state, str(path))
    else:
        path = tmp_path / "model.pth"
        if fmt == "lightning":
            obj = {
                "epoch": 3,
                "global_step": 120,
                "pytorch-lightning_version": "2.2.0",
                "state_dict": {f"model.{k}": v for k, v in state.items()},
            }
        elif fmt == "ddp":
            obj = {f"module.{k}": v for k, v in state.items()}
        else:
            obj = state
        torch.save(obj, path)
    loaded = _small_model(num_classes=5, pretrained=path).eval()
    assert loaded.state_dict().keys() == state.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    with torch.no_grad():
        assert torch.equal(loaded(_x()), model(_x()))


def test_own_checkpoint_for_the_other_representation_is_refused(tmp_path):
    torch.save(_trained_model().state_dict(), tmp_path / "isqrt.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys .*head\.conv\.weight"):
        build_model("resnet18", 5, "gap", pretrained=tmp_path / "isqrt.pth")


# ---------------------------------------------------------------------------------------------
# a file of fgvc's own runs with its recorded network (PretrainedFile): whole, trunk, refused


def _recorded(tmp_path, model, nan_at=None):
    """``model``'s weights as a bundle's safetensors, with the spec its bundle records."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if nan_at is not None:
        state[nan_at].view(-1)[0] = float("nan")
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(state, str(path))
    return PretrainedFile(path, model.spec, "export", given=str(tmp_path)), state


def test_recorded_same_network_loads_whole(tmp_path):
    source, state = _recorded(tmp_path, _trained_model())
    loaded = _small_model(num_classes=5, pretrained=source)
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    assert loaded.pretrained_record.to_dict() == {
        "source": "export",
        "file": str(source.path),
        "sha256": None,
        "given": str(tmp_path),
    }


def test_recorded_other_class_count_keeps_all_but_the_classifier(tmp_path, caplog):
    source, state = _recorded(tmp_path, _trained_model())
    with caplog.at_level(logging.WARNING, logger="fgvc.models"):
        loaded = _small_model(num_classes=7, pretrained=source)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "5 classes, the model 7" in line and str(source.path) in line
    own = loaded.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("classifier"))
    weight = loaded.classifier.weight
    assert weight.shape == (7, 136) and weight.abs().max() <= 1 / math.sqrt(136)


@pytest.mark.parametrize(
    ("kwargs", "differs"),
    [
        ({"representation": "gap", "reduce_dim": None}, "representation 'isqrt' (now 'gap')"),
        ({"reduce_dim": 8}, "reduce_dim 16 (now 8)"),
        ({"head": {"iterations": 3}}, "head {'iterations': 5} (now {'iterations': 3})"),
    ],
)
def test_recorded_other_head_loads_the_trunk_alone(tmp_path, caplog, kwargs, differs):
    source, state = _recorded(tmp_path, _trained_model())
    torch.manual_seed(11)
    fresh = _small_model(num_classes=5, **kwargs)
    torch.manual_seed(11)  # the same draws: head and classifier must stay these fresh ones
    with caplog.at_level(logging.WARNING, logger="fgvc.models"):
        loaded = _small_model(num_classes=5, pretrained=source, **kwargs)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "trunk only" in line and differs in line and str(source.path) in line
    for key, value in loaded.state_dict().items():
        truth = state[key] if key.startswith("backbone.") else fresh.state_dict()[key]
        assert torch.equal(value, truth), key
    assert loaded.pretrained_record.loaded == "trunk"


def test_recorded_other_trunk_is_refused_before_any_read(tmp_path):
    spec = _trained_model().spec
    missing = tmp_path / "never-read.safetensors"  # absent: a read would fail otherwise
    source = PretrainedFile(missing, dataclasses.replace(spec, arch="resnet34"), "run", "runs/x")
    with pytest.raises(CheckpointError) as info:
        _small_model(num_classes=5, pretrained=source)
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "runs/x" in message
    assert "holds a resnet34 network" in message and "the config builds resnet18" in message


@pytest.mark.parametrize("key", ["backbone.layer1.0.conv1.weight", "head.bn.running_var"])
@pytest.mark.parametrize("trunk_only", [False, True])
def test_recorded_non_finite_weights_are_refused(tmp_path, key, trunk_only):
    source, _ = _recorded(tmp_path, _trained_model(), nan_at=key)
    kwargs = {"reduce_dim": 8} if trunk_only else {}
    if trunk_only and key.startswith("head."):  # a head that is not loaded does not matter
        assert _small_model(num_classes=5, pretrained=source, **kwargs) is not None
        return
    with pytest.raises(CheckpointError, match=r"non-finite weights .*" + key.replace(".", r"\.")):
        _small_model(num_classes=5, pretrained=source, **kwargs)


def test_a_folder_is_refused_by_build_model(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder; build_model takes a weights file"):
        _small_model(pretrained=tmp_path)


# ---------------------------------------------------------------------------------------------
# never unpickle code


def test_malicious_pickle_is_refused_without_running(tmp_path, small_sd):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": dict(small_sd), "extra": CodePayload(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only=True") as info:
        _small_model(pretrained=path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the payload is real: an unrestricted unpickle runs it
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"


# ---------------------------------------------------------------------------------------------
# "isqrt-imagenet": the authors' published checkpoints, through a loopback server


def _serve_authors_checkpoint(http_server, small_sd):
    base_url, folder = http_server
    tmp = folder / "upload.tmp"
    torch.save(small_sd, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"mpncovresnet18-{digest[:8]}.pth"
    tmp.rename(folder / name)
    entry = AuthorsCheckpoint(
        url=f"{base_url}/{name}",
        filename=name,
        sha256_prefix=digest[:8],
        num_classes=10,
        reduce_dim=16,
    )
    return entry, folder / name


def test_registry_lists_the_published_files():
    r50, r101 = AUTHORS_CHECKPOINTS["resnet50"], AUTHORS_CHECKPOINTS["resnet101"]
    assert r50.url == "http://jtxie.com/models/mpncovresnet50-15991845.pth"
    assert (r50.sha256_prefix, r50.reduce_dim, r50.num_classes) == ("15991845", 256, 1000)
    assert r101.filename == "mpncovresnet101-ade9737a.pth" and r101.sha256_prefix == "ade9737a"


def test_isqrt_imagenet_downloads_once_then_uses_the_cache(
    http_server, hub_dir, small_sd, monkeypatch, dead_url
):
    entry, served = _serve_authors_checkpoint(http_server, small_sd)
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry)
    model = _small_model(pretrained="isqrt-imagenet")
    cached = hub_dir / "checkpoints" / entry.filename
    assert cached.read_bytes() == served.read_bytes()
    _assert_loaded(model, small_sd)
    # second time: the server is gone, the cache answers
    served.unlink()
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", dataclasses.replace(entry, url=dead_url))
    backbone_and_head = {k: v for k, v in small_sd.items() if not k.startswith("fc.")}
    _assert_loaded(_small_model(pretrained="isqrt-imagenet", num_classes=4), backbone_and_head)


def test_isqrt_imagenet_hash_mismatch_keeps_nothing(http_server, hub_dir, small_sd, monkeypatch):
    entry, _ = _serve_authors_checkpoint(http_server, small_sd)
    bad = dataclasses.replace(entry, sha256_prefix="00000000")
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", bad)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        _small_model(pretrained="isqrt-imagenet")
    folder = hub_dir / "checkpoints"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_isqrt_imagenet_offline_lists_every_way_forward_on_one_line(hub_dir, monkeypatch, dead_url):
    entry = AuthorsCheckpoint(dead_url, "mpncovresnet18-12345678.pth", "12345678", 10, 16)
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry)
    with pytest.raises(DownloadError) as info:
        _small_model(pretrained="isqrt-imagenet")
    message = str(info.value)
    assert "\n" not in message
    cached = hub_dir / "checkpoints" / "mpncovresnet18-12345678.pth"
    for part in (
        dead_url,
        f"put it at {cached}",  # a copy of this very file
        "Google Drive copy",
        AUTHORS_REPO,
        "`pretrained: /path/to/that/file`",
        ".pth.tar",
        "FGVC_ISQRT_IMAGENET_URL",
        "`pretrained: imagenet`",
        "a few points lower",
    ):
        assert part in message, part
    assert not any(p.is_file() for p in hub_dir.rglob("*"))


def _authors_entry(small_sd, url):
    """(registry entry for ``url``, file bytes) of the small checkpoint, named like the
    published ones (``<name>-<sha256 prefix>.pth``)."""
    buf = io.BytesIO()
    torch.save(small_sd, buf)
    data = buf.getvalue()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    entry = AuthorsCheckpoint(url, f"mpncovresnet18-{prefix}.pth", prefix, 10, 16)
    return entry, data


def _flaky_authors_checkpoint(flaky_server, small_sd):
    """The small checkpoint served by a :class:`FlakyServer` under /models/<hub name>."""
    entry, data = _authors_entry(small_sd, "")
    flaky_server.files[f"/models/{entry.filename}"] = data
    url = f"{flaky_server.base_url}/models/{entry.filename}"
    return dataclasses.replace(entry, url=url), data


@pytest.mark.parametrize("honour_range", [True, False])
def test_isqrt_imagenet_survives_a_dropped_connection(
    flaky_server, hub_dir, small_sd, monkeypatch, honour_range
):
    entry, data = _flaky_authors_checkpoint(flaky_server, small_sd)
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry)
    monkeypatch.setattr(fgvc.utils.download, "RETRY_BACKOFF_S", 0.01, raising=False)
    flaky_server.drop_after, flaky_server.honour_range = len(data) // 2, honour_range
    model = _small_model(pretrained="isqrt-imagenet")
    _assert_loaded(model, small_sd)
    assert (hub_dir / "checkpoints" / entry.filename).read_bytes() == data
    assert sorted(p.name for p in (hub_dir / "checkpoints").iterdir()) == [entry.filename]
    first, second = flaky_server.requests
    assert "Range" not in first
    assert second["Range"] == f"bytes={len(data) // 2}-"  # resumed (or restarted if ignored)


@pytest.mark.parametrize("variable", ["FGVC_ISQRT_IMAGENET_URL", "FGVC_MIRROR"])
def test_isqrt_imagenet_url_override(
    flaky_server, hub_dir, small_sd, monkeypatch, dead_url, variable
):
    """The authors' server is down; a mirror folder named by the environment serves the file."""
    entry, data = _flaky_authors_checkpoint(flaky_server, small_sd)
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", dataclasses.replace(entry, url=dead_url))
    monkeypatch.setenv(variable, f"{flaky_server.base_url}/models/")
    _assert_loaded(_small_model(pretrained="isqrt-imagenet"), small_sd)
    assert len(flaky_server.requests) == 1
    assert (hub_dir / "checkpoints" / entry.filename).read_bytes() == data


def test_isqrt_imagenet_uses_a_file_placed_in_the_cache(hub_dir, small_sd, monkeypatch, dead_url):
    """Copied by hand where the offline message says: used without any network."""
    entry, data = _authors_entry(small_sd, dead_url)
    (hub_dir / "checkpoints").mkdir(parents=True)
    (hub_dir / "checkpoints" / entry.filename).write_bytes(data)
    monkeypatch.setitem(AUTHORS_CHECKPOINTS, "resnet18", entry)
    _assert_loaded(_small_model(pretrained="isqrt-imagenet"), small_sd)


def test_authors_pth_tar_training_checkpoint_loads_through_load_pretrained(tmp_path, small_sd):
    """What the authors' ImageNet training script saves (pytorch/examples layout: epoch, arch,
    DataParallel state dict, best accuracy, optimizer state), pre-zip torch.save format: the
    path the offline message suggests for their Google Drive / Baidu copies."""
    checkpoint = {
        "epoch": 90,
        "arch": "mpncovresnet18",
        "state_dict": {f"module.{k}": v for k, v in small_sd.items()},
        "best_prec1": torch.tensor(71.2),
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.zeros(3)}},
            "param_groups": [{"lr": 1e-4, "momentum": 0.9, "nesterov": False, "params": [0]}],
        },
    }
    path = tmp_path / "model_best.pth.tar"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    for source in (path, str(path)):
        model = load_pretrained(_small_model(), source, progress=False)
        _assert_loaded(model, small_sd)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "resnet34"}, r"resnet50, resnet101 only, not resnet34"),
        ({"arch": "resnet50", "representation": "gap"}, r"representation='isqrt'"),
        ({"arch": "resnet50", "reduce_dim": 128}, r"reduce_dim=256"),
    ],
)
def test_isqrt_imagenet_wrong_model(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(pretrained="isqrt-imagenet", **kwargs)


# ---------------------------------------------------------------------------------------------
# "imagenet": torchvision's backbone weights


def test_imagenet_offline_names_url_and_cache_path(hub_dir, no_network):
    with pytest.raises(DownloadError) as info:
        build_model("resnet18", num_classes=3, reduce_dim=8, pretrained="imagenet")
    message = str(info.value)
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert no_network == [url]  # torchvision tried exactly that URL
    assert url in message
    assert str(hub_dir / "checkpoints" / "resnet18-f37072fd.pth") in message


@pytest.mark.parametrize("representation", ["isqrt", "gap"])
def test_imagenet_from_the_hub_cache(hub_dir, no_network, representation):
    """A file already in torch.hub's cache is used as is (torchvision checks hashes only when
    it downloads); only the backbone is taken, torchvision's fc is dropped."""
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)
    for buf in (b for n, b in tv.named_buffers() if n.endswith("running_var")):
        buf.uniform_(0.5, 1.5)
    (hub_dir / "checkpoints").mkdir(parents=True)
    torch.save(tv.state_dict(), hub_dir / "checkpoints" / "resnet18-f37072fd.pth")
    torch.manual_seed(2)
    model = build_model("resnet18", 3, representation, reduce_dim=8, pretrained="imagenet")
    assert no_network == []
    own = model.state_dict()
    for key, value in tv.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[f"backbone.{key}"], value), key
    assert model.classifier.weight.shape == (3, model.feature_dim)
    if representation == "isqrt":  # the head keeps its fresh init
        assert torch.equal(model.head.bn.weight, torch.ones(8))


class _SystemCall:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_pickle_calling_os_system_is_named_as_such(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _SystemCall()}, path)
    with pytest.raises(CheckpointError, match="refused to load .*weights_only=True"):
        read_checkpoint(path)
