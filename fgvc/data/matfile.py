"""Reading MATLAB ``.mat`` annotation files (Stanford Cars, Stanford Dogs, Flowers-102)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_mat(path: Path, dataset: str) -> dict[str, Any]:
    """The variables of ``path`` with cells and structs as Python lists and dicts
    (``scipy.io.loadmat(simplify_cells=True)``: one-element dimensions squeezed away).

    Raises:
        FileNotFoundError: ``path`` is missing (names it and ``fgvc data download dataset``).
        ValueError: it is not a readable ``.mat`` file.
    """
    from scipy.io import loadmat  # scipy is a dependency; only .mat datasets need it

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; see `fgvc data download {dataset}` for where to get it"
        )
    try:
        return loadmat(str(path), simplify_cells=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable .mat file ({err})") from err
