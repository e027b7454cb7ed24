"""Configs composed from parts, and the run's name.

A config file may start from other config files, listed under a top-level ``config:`` key
(paths relative to the file), in the manner of mmpretrain's ``_base_``::

    # configs/cub_r101.yaml
    config: [recipes/isqrt_finetune.yaml, data/cub.yaml, trunks/resnet101.yaml]
    name: cub_r101

:func:`expand_config_args` turns ``--config configs/cub_r101.yaml`` into one ``--config``
per base (their own bases first, recursively), then the file's other keys: exactly what
giving those files with several ``--config`` does, where a later file overrides the keys it
names and keeps the others (a list, such as ``trainer.logger``, is replaced whole).
jsonargparse reads a single ``config:`` path in a file itself, but the keys beside it then
replace whole sections (``model:`` drops the base's model settings), and a list there is
silently ignored; expanding first gives every form the same, documented meaning.

:func:`name_the_run` gives all loggers one name: the top-level ``name`` when given, else
the first name a logger was given, else one derived from the resolved config
(``<dataset>_<trunk>[_<representation>]``, e.g. ``cub_resnet101``). The CSV logger's name is
the run folder, ``<save_dir>/<name>/version_<n>``; W&B's is the run's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fgvc.errors import ConfigError

#: the top-level key of a config file that lists the files it starts from
BASES = "config"
#: the values loggers take when no name was given to them (Lightning's CSV default, W&B's)
UNNAMED = (None, "", "lightning_logs")
#: the representation a name leaves out (fgvc's default)
DEFAULT_REPRESENTATION = "isqrt"


def _read(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"--config {path}: cannot read it as YAML ({err})") from None


def config_parts(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[str]:
    """The ``--config`` values that ``path`` stands for: each base's parts, in order, then
    ``path`` itself, or its other keys as YAML text when it lists bases."""
    path = Path(path)
    content = _read(path)
    if not isinstance(content, dict) or BASES not in content:
        return [str(path)]
    here = path.resolve()
    if here in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, here))
        raise ConfigError(f"{path}: its config: bases include itself ({chain}); remove the loop")
    bases = content.pop(BASES)
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"{path}: config: must be a file or a list of files (relative to {path.parent}), "
            f"got {bases!r}"
        )
    parts: list[str] = []
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(
                f"{path}: its base {base} is not a file ({base_path}); config: paths are "
                f"relative to the file that lists them"
            )
        parts += config_parts(base_path, (*_seen, here))
    if content:  # the file's own keys, after its bases: they override them
        parts.append(yaml.safe_dump(content, sort_keys=False))
    return parts


def expand_config_args(args: list[str]) -> list[str]:
    """Command-line words with every ``--config FILE`` (``-c``, ``--config=FILE``) whose
    file lists bases replaced by its parts (see the module doc)."""
    words: list[str] = []
    index = 0
    while index < len(args):
        word = args[index]
        value = None
        if word in ("--config", "-c") and index + 1 < len(args):
            value, index = args[index + 1], index + 2
        elif word.startswith("--config="):
            value, index = word.split("=", 1)[1], index + 1
        else:
            words.append(word)
            index += 1
            continue
        # YAML given as text on the command line is jsonargparse's to read
        parts = config_parts(value) if Path(value).is_file() else [value]
        for part in parts:
            words += ["--config", part]
    return words


def derived_name(config: Any) -> str:
    """``<dataset>_<trunk>[_<representation>]`` from the resolved config: the dataset's name
    in its descriptor (``CUBDataModule`` -> ``cub``; another class: its name without
    ``DataModule``), the trunk without its hub
    (``timm/convnext_tiny`` -> ``convnext_tiny``), the representation unless iSQRT-COV."""
    from fgvc.data.datasets import datamodule_spec

    data = config.get("data")
    class_name = str(getattr(data, "class_path", None) or "data").rsplit(".", 1)[-1]
    spec = datamodule_spec(
        class_name
    )  # a dataset's own name (``Flowers102DataModule``: flowers102)
    dataset = spec.name if spec else class_name.removesuffix("DataModule").lower() or "data"
    model = config.get("model")
    arch = str(model.get("arch") if model is not None else "model")
    parts = [dataset, arch.rstrip("/").rsplit("/", 1)[-1]]
    representation = model.get("representation") if model is not None else None
    if representation and representation != DEFAULT_REPRESENTATION:
        parts.append(str(representation))
    return "_".join(parts)


def _named_loggers(trainer: Any) -> list[Any]:
    value = trainer.get("logger")
    loggers = value if isinstance(value, list) else [value]
    return [lg for lg in loggers if hasattr(getattr(lg, "init_args", None), "name")]


def name_the_run(config: Any) -> str | None:
    """One name for every logger of ``config`` (a subcommand's parsed config; see the module
    doc); returns it (None when there are no loggers)."""
    loggers = _named_loggers(config.trainer)
    given = config.get("name")
    if not given:
        named = [lg.init_args.name for lg in loggers if lg.init_args.name not in UNNAMED]
        given = named[0] if named else None
    name = given or derived_name(config)
    if not loggers:
        return None
    for logger in loggers:
        if config.get("name") or logger.init_args.name in UNNAMED:
            logger.init_args.name = name
    return name
