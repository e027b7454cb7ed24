"""The export format table: each format round-trips (export -> load -> the eager network's
logits within its tolerance, against a float64 reference), and the table's invariants."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
import torch

from fgvc.deploy import formats
from fgvc.deploy.bundle import read_config
from fgvc.deploy.formats import FORMATS, by_name, selected
from fgvc.errors import UsageError
from tests.tiny import IMAGE_SIZE

README = Path(__file__).resolve().parents[1] / "README.md"


def images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def float64_reference(tiny_run):
    """The trained module's logits in float64 on 24 images, computed in two batches of
    sizes other than the export's (2) and the verification's (4, 1)."""
    import copy

    _, module, _, _ = tiny_run
    double = copy.deepcopy(module.model).double().eval()
    x = images(24, seed=11)
    with torch.no_grad():
        return x, double(x.double())


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_each_format_round_trips(all_formats_bundle, float64_reference, fmt):
    """Loaded by its record as fgvc predict loads it: dynamic batch, the eager logits."""
    x, reference = float64_reference
    path = all_formats_bundle / fmt.file
    assert read_config(all_formats_bundle)["files"][fmt.key] == fmt.file
    with pytest.warns(FutureWarning) if fmt.deprecated else _no_warning():
        run = fmt.load(path, "cpu")
    got = torch.cat([run(x[:7]), run(x[7:])]).double()  # batches 7 and 17
    assert got.shape == reference.shape and got.dtype == torch.float64
    agree = (got.argmax(1) == reference.argmax(1)).double().mean().item()
    assert agree >= fmt.min_top1
    diff = (got - reference).abs().max().item()
    if fmt.tolerance is not None:
        assert diff <= fmt.tolerance, (fmt.name, diff)
    else:  # int8: approximate (not a float copy), yet keeping the logits' variation
        centred = reference - reference.mean(1, keepdim=True)
        relative = ((got - reference).norm() / centred.norm()).item()
        assert diff > 1e-5 and relative < 0.2, (diff, relative)


class _no_warning:
    """Fails when the block warns (a format nobody asked to be deprecated must not)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.caught = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        deprecations = [w for w in self.caught if issubclass(w.category, FutureWarning)]
        assert not deprecations, [str(w.message) for w in deprecations]


def test_int8_is_int8_and_keeps_the_head_in_float(all_formats_bundle):
    """Convolutions and the classifier quantized; the covariance head's matrix products
    (activation x activation) left in float32; the file about a quarter of float32's."""
    fp32 = onnx.load(str(all_formats_bundle / "model.onnx"))
    int8 = onnx.load(str(all_formats_bundle / "model.int8.onnx"))

    def count(model, op):
        return sum(node.op_type == op for node in model.graph.node)

    assert count(int8, "ConvInteger") == count(fp32, "Conv") > 0
    assert count(int8, "Conv") == 0 and count(int8, "MatMulInteger") == count(fp32, "Gemm") == 1
    assert count(int8, "MatMul") == count(fp32, "MatMul") > 0  # the Newton-Schulz products
    ratio = (all_formats_bundle / "model.int8.onnx").stat().st_size / (
        all_formats_bundle / "model.onnx"
    ).stat().st_size
    assert 0.2 < ratio < 0.35
    entry = read_config(all_formats_bundle)["onnx-int8"]
    assert entry["quantized_ops"] == {"ConvInteger": count(fp32, "Conv"), "MatMulInteger": 1}
    assert entry["verify"]["min_top1_agreement"] == formats.onnx_int8.MIN_TOP1


def test_the_table_is_consistent():
    for attr in ("name", "file", "key", "backend"):
        values = [getattr(f, attr) for f in FORMATS]
        assert len(set(values)) == len(values), attr
    names = [f.name for f in FORMATS]
    assert names.index("onnx") < names.index("onnx-int8")  # int8 quantizes the onnx file
    assert formats.DEFAULT_NAMES == ("safetensors", "onnx")
    assert formats.WEIGHTS is by_name("safetensors") and formats.WEIGHTS.backend == "torch"
    assert set(formats.BUNDLE_FILES) == {"model.json", *(f.file for f in FORMATS)}
    assert by_name("torchscript").deprecated and not by_name("pt2").deprecated
    # the auto backend never picks a deprecated or approximate format over another
    assert by_name("torchscript").auto == by_name("onnx-int8").auto == 0
    assert by_name("onnx").auto > by_name("pt2").auto > by_name("safetensors").auto > 0


def test_selected_keeps_table_order_and_always_the_weights():
    assert [f.name for f in selected(["torchscript", "onnx"])] == [
        "safetensors",
        "onnx",
        "torchscript",
    ]
    with pytest.raises(UsageError) as err:
        selected(["onnx", "tflite", "pt"])
    assert str(err.value) == (
        "unknown export formats 'tflite', 'pt'; known formats: "
        "safetensors, onnx, pt2, onnx-int8, torchscript"
    )


def test_readme_table_lists_every_format():
    """The README's format table names each record's file and runtime on its row."""
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`([\w-]+)`\s*\|\s*`([\w.]+)`\s*\|\s*(\w+)", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    for fmt in FORMATS:
        assert rows.get(fmt.name) == (fmt.file, fmt.runtime), fmt.name


def test_a_loader_error_is_not_a_logit_function(tmp_path):
    """A truncated file fails to load in every format (fgvc predict turns it into one line)."""
    for fmt in FORMATS[1:]:  # the weights need a model.json, tested in test_deploy_bundle
        path = tmp_path / fmt.file
        path.write_bytes(b"\x00truncated")
        with pytest.raises(Exception):  # noqa: B017, PT011 - each runtime's own error type
            fmt.load(path, "cpu")
