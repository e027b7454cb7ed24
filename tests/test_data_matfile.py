"""fgvc.data.matfile: .mat variables as the datasets read them, errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio

from fgvc.data.matfile import load_mat, mat_integers


def test_row_vectors_and_scalars_become_int64_vectors(tmp_path):
    path = tmp_path / "ids.mat"
    ids = np.array([[65535, 1, 300]], dtype=np.uint16)  # MATLAB's 1 x k, unsigned
    sio.savemat(path, {"ids": ids, "one": np.array([[7]], np.uint8), "d": np.array([[2.0, 3.0]])})
    mat = load_mat(path, "unused")
    values = mat_integers(mat, "ids", path)
    assert values.dtype == np.int64 and values.tolist() == [65535, 1, 300]
    assert (values - 2).tolist() == [65533, -1, 298]  # no wrap-around
    assert mat_integers(mat, "one", path).tolist() == [7]
    assert mat_integers(mat, "d", path).tolist() == [2, 3]  # whole doubles, as MATLAB saves


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([[1.5, 2.0]]), r"'v' holds values that are not whole numbers"),
        (np.array([["abc"]]), r"'v' should be a vector of integers"),
        (np.ones((2, 3)), r"'v' should be a vector of integers, got float64 \(2, 3\)"),
    ],
)
def test_bad_values_name_the_file_and_variable(tmp_path, value, message):
    path = tmp_path / "bad.mat"
    sio.savemat(path, {"v": value})
    with pytest.raises(ValueError, match=message) as raised:
        mat_integers(load_mat(path, "unused"), "v", path)
    assert str(path) in str(raised.value)


def test_missing_file_variable_and_unreadable_file(tmp_path):
    path = tmp_path / "labels.mat"
    with pytest.raises(FileNotFoundError, match=r"labels\.mat is missing; get it from there"):
        load_mat(path, "get it from there")
    sio.savemat(path, {"labels": np.array([[1, 2]])})
    with pytest.raises(
        ValueError, match=r"labels\.mat has no 'setid' variable \(it holds \['labels'\]\)"
    ):
        mat_integers(load_mat(path, ""), "setid", path)
    path.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(ValueError, match=r"labels\.mat: not a readable \.mat file"):
        load_mat(path, "")
