"""Reading the MATLAB (v5) annotation files some datasets ship (Stanford Cars, Flowers-102).

:func:`load_mat` wraps :func:`scipy.io.loadmat` with ``simplify_cells=True`` (structs as
dicts, cell arrays as lists, unit dimensions squeezed), so a ``1 x N`` array comes back
with shape ``(N,)`` and a ``1 x 1`` one as a scalar; :func:`mat_integers` turns such a
value back into a 1-D integer array. Errors name the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_mat(path: Path, missing_hint: str) -> dict[str, Any]:
    """The variables of the ``.mat`` file ``path``, cells and structs simplified.

    Args:
        path: the file.
        missing_hint: how to get the file, ending the message when it is missing
            (e.g. ``"see `fgvc data download cars` for sources"``).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: it is not a MATLAB file scipy can read.
    """
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy is a dependency
        raise RuntimeError(f"reading {path.name} needs scipy: pip install scipy") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {missing_hint}")
    try:
        return loadmat(str(path), simplify_cells=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable .mat file ({err})") from err


def mat_integers(mat: dict[str, Any], key: str, path: Path) -> np.ndarray:
    """Variable ``key`` of a :func:`load_mat` result as a 1-D ``int64`` array.

    The files' unsigned types (``uint8`` labels, ``uint16`` ids) are widened first, so
    that arithmetic on the values cannot wrap around.

    Raises:
        ValueError: ``key`` is missing, or is not an array of whole numbers.
    """
    if key not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(
            f"{path} has no '{key}' variable (it holds {names}); is it the right file?"
        )
    value = np.atleast_1d(np.asarray(mat[key]))
    if value.ndim != 1 or value.dtype.kind not in "iuf":
        raise ValueError(
            f"{path}: '{key}' should be a vector of integers, got {value.dtype} {value.shape}"
        )
    if value.dtype.kind == "f" and not np.all(np.isfinite(value) & (value == np.round(value))):
        raise ValueError(f"{path}: '{key}' holds values that are not whole numbers")
    return value.astype(np.int64)
