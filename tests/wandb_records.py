"""Read the records of an offline W&B run file (``run-<id>.wandb``) for assertions.

The file is W&B's append-only log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0),
then 32 KiB blocks of chunks, each ``<crc32:u32><length:u16><type:u8>`` + payload, where a
record is one FULL chunk or FIRST, MIDDLE..., LAST. Each record is a ``wandb.proto``
``Record`` message.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[pb.Record]:
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # block tail padding
            pos += left
            continue
        _, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:
            break
        payload = data[pos + CHUNK.size : pos + CHUNK.size + length]
        pos += CHUNK.size + length
        if kind in (FULL, FIRST):
            pending = payload
        else:
            pending += payload
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _keys(path: str | Path, kind: str) -> set[str]:
    """Keys of the ``history`` items or ``config`` updates the run logged."""
    keys = set()
    for record in records(path):
        if record.WhichOneof("record_type") == kind:
            items = record.history.item if kind == "history" else record.config.update
            keys.update(item.key or "/".join(item.nested_key) for item in items)
    return keys


def history_keys(path: str | Path) -> set[str]:
    return _keys(path, "history")


def history(path: str | Path) -> list[dict[str, Any]]:
    """The logged rows in order, each ``{key: value}`` (values JSON-decoded; a nested key's
    parts joined with ``/``, e.g. ``val/most_confused/path``)."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def last_table(path: str | Path, key: str, index: int = -1) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the last (or the ``index``-th) ``wandb.Table`` logged under
    ``key``, read from the file the run wrote beside its ``.wandb`` log
    (``files/media/table/...``)."""
    logged = [row[f"{key}/path"] for row in history(path) if f"{key}/path" in row]
    assert logged, f"no table {key} in {path}"
    table = json.loads((Path(path).parent / "files" / logged[index]).read_text(encoding="utf-8"))
    return table["columns"], table["data"]


def artifacts(path: str | Path) -> list[tuple[str, str, list[str]]]:
    """(name, type, aliases) of the artifacts the run logged."""
    out = []
    for record in records(path):
        if record.WhichOneof("record_type") == "artifact":
            art = record.artifact
            out.append((art.name, art.type, list(art.aliases)))
    return out


def config_keys(path: str | Path) -> set[str]:
    return _keys(path, "config")
