"""fgvc: fine-grained visual recognition with iSQRT-COV networks.

``fgvc.load(path)`` gives a trained network that classifies and explains images
(:mod:`fgvc.deploy.classifier`); it is imported on first use, so that ``import fgvc`` stays
instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from fgvc.deploy.classifier import load


def __getattr__(name: str) -> Any:
    if name == "load":
        from fgvc.deploy.classifier import load

        return load
    raise AttributeError(f"module 'fgvc' has no attribute {name!r}")
