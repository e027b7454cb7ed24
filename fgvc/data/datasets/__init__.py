"""The datasets: one module each, holding its parser and its ``DATASET`` descriptor.

Every module of this package that defines ``DATASET`` (a
:class:`~fgvc.data.descriptor.DatasetSpec`) is a dataset; nothing else lists them. So a new
dataset is its module here, a config and a replica test - ``fgvc data check|download``,
the presets and ``fgvc.data.<Name>DataModule`` find it.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from fgvc.data.descriptor import DatasetSpec
from fgvc.data.presets import GENERIC, Preset


@functools.cache
def registry() -> dict[str, DatasetSpec]:
    """``{name: spec}`` of every dataset module, in module-name order."""
    specs: dict[str, DatasetSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "DATASET", None)
        if not isinstance(spec, DatasetSpec):
            continue
        if spec.name in specs:  # two modules claiming one name would shadow each other
            raise RuntimeError(f"dataset name {spec.name!r} is defined twice ({info.name})")
        specs[spec.name] = spec
    return specs


def dataset_names() -> tuple[str, ...]:
    """The command-line names of all datasets."""
    return tuple(registry())


def dataset_spec(name: str) -> DatasetSpec:
    """The descriptor of dataset ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    specs = registry()
    if name not in specs:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(specs)}")
    return specs[name]


@functools.cache
def presets() -> dict[str, Preset]:
    """``{preset name: numbers}``: each dataset's own preset under its name, and ``generic``."""
    named = {spec.name: spec.preset for spec in registry().values() if spec.preset is not None}
    return {**named, "generic": GENERIC}


def datamodule_spec(class_name: str) -> DatasetSpec | None:
    """The dataset whose DataModule is ``fgvc.data.<class_name>``, if any."""
    for spec in registry().values():
        if spec.datamodule == class_name:
            return spec
    return None


__all__ = ["DatasetSpec", "datamodule_spec", "dataset_names", "dataset_spec", "presets", "registry"]
