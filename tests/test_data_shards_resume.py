# Rename to tests/test_data_shards_resume.py once main (with the midepoch merge:
# fgvc.train.resume, tests/test_train_resume.py) and this branch are merged; it passed on that
# merge (1 passed, 69 s). It needs checkpoint_every_n_steps, which this branch does not have.
"""Shards with ``checkpoint_every_n_steps``: a SIGTERM inside an epoch on 2 gloo processes,
resumed with ``--ckpt_path last``, ends as the uninterrupted run (weights bit for bit,
metrics.csv, every process's batches) - the ShardDataModule's stream through fgvc's resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from fgvc.data.shards.write import write_shards
from tests.replicas import make_folders
from tests.test_train_resume import RUN, check_same_run, fit, records, tiny, workdir

__all__ = ["workdir"]


def on_shards(folder: Path, shards: Path, **extra) -> None:
    cfg = tiny(folder, **extra)
    config = yaml.safe_load(cfg.read_text())
    config["data"] = {
        "class_path": "fgvc.data.ShardDataModule",
        "init_args": {"root": str(shards), "batch_size": 2, "num_workers": 1, "image_size": 32},
    }
    cfg.write_text(yaml.safe_dump(config))


@pytest.mark.slow
def test_sigterm_inside_an_epoch_on_shards_resumes_exactly(workdir):
    folders = make_folders(
        workdir / "folders", {"train": {"a": 7, "b": 6, "c": 6}, "val": {"a": 2, "b": 2, "c": 2}}
    )
    shards = workdir / "shards"
    write_shards("folder", folders, str(shards), jobs=1, chunk_bytes="3KB", log=str)
    straight, broken = workdir / "straight", workdir / "broken"
    on_shards(straight, shards)
    stop = {"class_path": "tests.cli_helpers.SigtermAtStep", "init_args": {"batch": 0}}
    on_shards(broken, shards, callbacks=[stop])
    assert fit(straight).returncode == 0

    proc = fit(broken)
    assert proc.returncode == 143, proc.stderr[-3000:]
    saved = torch.load(broken / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (0, 2)
    (loader,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    # 19 images on 2 processes x 2: 5 batches each (the last of 1 and 2 images), none twice
    assert (loader["batches"], loader["epoch_batches"], loader["world_size"]) == (2, 5, 2)
    assert [r[:2] for r in records(broken, 0)] == [[0, 0], [0, 1]]
    config = yaml.safe_load((broken / "tiny.yaml").read_text())
    config["trainer"]["callbacks"] = config["trainer"]["callbacks"][:1]
    (broken / "tiny.yaml").write_text(yaml.safe_dump(config))
    resumed = fit(broken, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    check_same_run(straight, broken, ranks=2)
