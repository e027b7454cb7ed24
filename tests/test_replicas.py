"""The replica writers themselves: the dataset quirks they must reproduce are really there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io as sio
from PIL import Image

from tests.replicas import BANNER, BANNER_RGB, CAR_FIELDS, _struct, make_aircraft, make_cub


def test_cub_replica_special_modes(tmp_path):
    replica = make_cub(tmp_path)
    assert Image.open(replica.special["L"]).mode == "L"
    assert Image.open(replica.special["CMYK"]).mode == "CMYK"


def test_cars_replica_one_record_struct_is_zero_d_with_squeeze(tmp_path):
    path = tmp_path / "one.mat"
    record = dict(bbox_x1=1, bbox_y1=2, bbox_x2=3, bbox_y2=4, fname="00001.jpg") | {"class": 3}
    sio.savemat(path, {"annotations": _struct([record], CAR_FIELDS)})
    assert sio.loadmat(path, squeeze_me=True)["annotations"].ndim == 0  # the documented pitfall


def test_aircraft_replica_has_banner_and_leading_zeros(tmp_path):
    replica = make_aircraft(tmp_path)
    path, _ = replica.samples["variant/train"][0]
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert Path(path).stem.startswith("0")
    assert np.abs(pixels[-BANNER + 2 :] - BANNER_RGB).max() < 40
