"""NetSpec: one description of a network that builds it, compares and round-trips."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from fgvc.models import NetSpec, build_model


def test_defaults_resolve_and_gap_ignores_the_reduction():
    spec = NetSpec()
    assert (spec.arch, spec.representation, spec.reduce_dim, spec.head) == (
        "resnet50",
        "isqrt",
        256,
        {"iterations": 5},
    )
    assert spec.last_stride == 1  # iSQRT-COV's default: 448 px -> 28 x 28
    gap = NetSpec("resnet18", 10, "gap", reduce_dim=64)
    assert (gap.reduce_dim, gap.head, gap.last_stride) == (None, {}, 2)
    assert gap == NetSpec("resnet18", 10, "gap")  # the ignored field does not make it differ


@pytest.mark.parametrize(
    "representation, reduce_dim, head",
    [
        ("isqrt", 256, {"iterations": 5}),
        ("mpncov", 256, {}),
        ("bcnn", None, {}),  # the authors' B-CNN and CBP pool the trunk's channels
        ("cbp", None, {"projection_dim": 8192, "seed": 0}),
    ],
)
def test_each_head_has_its_own_defaults(representation, reduce_dim, head):
    spec = NetSpec("resnet18", 10, representation)
    assert (spec.reduce_dim, spec.head, spec.last_stride) == (reduce_dim, head, 1)
    assert NetSpec("resnet18", 10, representation, reduce_dim=None).reduce_dim is None
    assert NetSpec("resnet18", 10, representation, reduce_dim=32).reduce_dim == 32


def test_head_settings_are_filled_frozen_hashable_and_plain_in_to_dict():
    spec = NetSpec("resnet18", 3, "cbp", head={"projection_dim": 64})
    assert spec.head == {"projection_dim": 64, "seed": 0}
    assert hash(spec) == hash(NetSpec("resnet18", 3, "cbp", head={"seed": 0, "projection_dim": 64}))
    with pytest.raises(TypeError):
        spec.head["seed"] = 1  # read-only
    plain = json.loads(json.dumps(spec.to_dict()))
    assert plain["head"] == {"projection_dim": 64, "seed": 0}
    assert NetSpec.from_mapping(plain) == spec
    assert pickle.loads(pickle.dumps(spec)) == spec


@pytest.mark.parametrize(
    "representation, head, message",
    [
        ("isqrt", {"iteration": 5}, r"'isqrt' has no setting 'iteration'.*takes iterations"),
        ("gap", {"iterations": 5}, r"'gap' has no setting 'iterations'.*takes no settings"),
        ("cbp", {"projection_dim": 0}, r"projection_dim must be an integer >= 1"),
        ("cbp", {"projection_dim": 2**30}, r"projection_dim must be at most"),
        ("cbp", {"seed": -1}, r"seed must be an integer"),
        ("isqrt", [("iterations", 5)], r"model.head must be a mapping"),
    ],
)
def test_bad_head_settings_are_refused(representation, head, message):
    with pytest.raises((ValueError, TypeError), match=message):
        NetSpec("resnet18", 3, representation, head=head)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"arch": "resnet9"}, "unknown arch"),
        ({"num_classes": 0}, "num_classes must be an integer >= 1"),
        ({"representation": "bilinear"}, "unknown representation"),
        ({"reduce_dim": 2.5}, "reduce_dim must be an integer"),
        ({"head": {"iterations": 0}}, "iterations"),
        ({"last_stride": 3}, "last_stride must be 1 or 2"),
        # hand-edited sizes that would allocate 80-130 GB or iterate for ever
        ({"num_classes": 1_000_000}, "num_classes must be at most 100000"),
        ({"reduce_dim": 100_000}, "reduce_dim must be at most 2048"),
        ({"arch": "resnet18", "reduce_dim": 513}, "reduce_dim must be at most 512"),
        ({"head": {"iterations": 1_000_000_000}}, "iterations must be at most 100"),
        ({"reduce_dim": "none"}, "reduce_dim must be an integer"),
        ({"num_classes": 40_000}, "would hold 1,315,840,000 weights"),
        ({"reduce_dim": 2048, "num_classes": 600}, "use fewer classes or a smaller reduce_dim"),
    ],
)
def test_bad_values_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        NetSpec(**fields)


def test_mapping_round_trip_ignores_other_keys_and_lists_differences():
    spec = NetSpec("resnet18", 3, reduce_dim=8, head={"iterations": 3})
    hparams = {**spec.to_dict(), "lr": 0.1, "class_names": ["a", "b", "c"]}
    assert NetSpec.from_mapping(hparams) == spec
    assert NetSpec.from_mapping(hparams, num_classes=4).num_classes == 4
    other = NetSpec("resnet18", 4, reduce_dim=16, head={"iterations": 3})
    assert spec.differences(other) == ["num_classes=3 (now 4)", "reduce_dim=8 (now 16)"]
    assert spec.differences(spec) == []
    assert spec.describe() == "resnet18 isqrt d=8 N=3, 3 classes"


def test_build_model_takes_a_spec_and_the_net_gives_it_back():
    spec = NetSpec("resnet18", 5, reduce_dim=8, head={"iterations": 2}, last_stride=2)
    net = build_model(spec)
    assert net.spec == spec and net.feature_dim == 8 * 9 // 2
    assert net.backbone.layer4[0].conv1.stride == (2, 2)
    same = build_model(
        "resnet18", num_classes=5, reduce_dim=8, head={"iterations": 2}, last_stride=2
    )
    assert same.spec == spec
    assert [p.shape for p in net.parameters()] == [p.shape for p in same.parameters()]
    net.reset_classifier(7)  # the spec follows the classifier
    assert net.spec.num_classes == 7 and net.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 7)
    with pytest.raises(TypeError, match="takes no separate num_classes"):
        build_model(spec, num_classes=3)


def test_the_largest_sane_specs_are_accepted_and_feature_dim_is_the_heads():
    assert NetSpec(num_classes=21_841).feature_dim == 256 * 257 // 2  # ImageNet-21k classes
    assert NetSpec("resnet34", reduce_dim=512, head={"iterations": 100}).reduce_dim == 512
    specs = [
        NetSpec("resnet18", 3, reduce_dim=8),
        NetSpec("resnet50", 3, "gap"),
        NetSpec("resnet18", 3, "mpncov", reduce_dim=8),
        NetSpec("resnet18", 3, "bcnn", reduce_dim=8),
        NetSpec("resnet18", 3, "bcnn"),
        NetSpec("resnet18", 3, "cbp", head={"projection_dim": 100}),
    ]
    assert [s.feature_dim for s in specs] == [36, 2048, 36, 64, 512 * 512, 100]
    for spec in specs:
        assert build_model(spec).feature_dim == spec.feature_dim


def test_old_checkpoint_hyperparameters_and_bundles_with_flat_iterations_still_read():
    """Before the head table: FGVCClassifier's hyperparameters and model.json's net held
    Newton-Schulz iterations flat (None for gap), and gap specs reduce_dim None."""
    hparams = {
        "arch": "resnet18",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "representation": "isqrt",
        "reduce_dim": 8,
        "iterations": 3,
        "pretrained": None,
        "last_stride": None,
        "lr": 0.01,
    }
    expected = NetSpec("resnet18", 3, "isqrt", 8, {"iterations": 3}, 1)
    assert NetSpec.from_mapping(hparams) == expected
    old_net = {
        "arch": "resnet18",
        "num_classes": 3,
        "representation": "isqrt",
        "reduce_dim": 8,
        "iterations": 3,
        "last_stride": 1,
    }
    assert NetSpec.from_mapping(old_net) == expected
    old_gap = {**old_net, "representation": "gap", "reduce_dim": None, "iterations": None}
    assert NetSpec.from_mapping(old_gap) == NetSpec("resnet18", 3, "gap", last_stride=1)
    old_gap_hparams = {**hparams, "representation": "gap", "reduce_dim": 256}
    assert NetSpec.from_mapping(old_gap_hparams) == NetSpec("resnet18", 3, "gap")
