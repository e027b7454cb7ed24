"""Restarts under ``torchrun --max-restarts N``: the restarted processes meet again and
continue the run.

When a process dies, torchrun's agent stops the others and starts them all again
(``TORCHELASTIC_RESTART_COUNT`` counts the attempts). Two things would go wrong:

* With the static rendezvous (torchrun's default for a fixed ``--nnodes``) every attempt's
  processes meet in the agent's own TCP store, which still holds the first attempt's keys:
  gloo reads the dead processes' addresses from it and fails to connect ("Connection
  refused"). :func:`meet_afresh` gives each restarted attempt a store of its own: rank 0
  opens it on a free port and announces the port in the agent's store under a key of this
  attempt, the others read it there.
* A restarted ``fgvc fit`` would start the run from scratch in a new folder;
  :func:`restart_resume_point` finds the run the first attempt started instead, whose
  ``last.ckpt`` the restarted attempt continues (as SLURM's requeue does).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

from fgvc.runs import CHECKPOINTS, LAST, run_folders, run_record

#: how long the processes of a restarted attempt wait for rank 0's new store
MEET_TIMEOUT = timedelta(minutes=5)


def restart_count() -> int:
    """Which torchrun attempt this process belongs to (0: the first, or no torchrun)."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return int(value) if value.isdigit() else 0


def launch_record() -> dict[str, str]:
    """What ``run.json`` records of a torchrun launch, to recognise the run after a restart."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return {}
    return {"launcher": "torchrun", "torchelastic_run_id": os.environ["TORCHELASTIC_RUN_ID"]}


def restart_resume_point(save_dir: str | os.PathLike, name: str) -> tuple[Path, Path] | None:
    """After a torchrun restart: ``(last.ckpt, run folder)`` of the run this launch started
    (the newest run of the config, recorded by this launch), or None when it saved none."""
    if restart_count() == 0:
        return None
    runs = run_folders(save_dir, name)
    if not runs:
        return None
    newest = runs[-1]
    record = run_record(newest)
    ours = {"command": "fit", **launch_record()}
    if any(record.get(k) != v for k, v in ours.items()):
        return None
    last = newest / CHECKPOINTS / LAST
    return (last, newest) if last.is_file() else None


def meet_afresh() -> None:
    """Before a restarted attempt's processes form their process group: a new store for
    this attempt (see the module doc). Does nothing in a first attempt, outside torchrun, or
    when the processes do not meet in the agent's store (other rendezvous backends start a
    new one per attempt)."""
    attempt = restart_count()
    env = os.environ
    if attempt == 0 or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return
    from torch.distributed import TCPStore

    addr, port, rank = env["MASTER_ADDR"], int(env["MASTER_PORT"]), int(env["RANK"])
    world = int(env["WORLD_SIZE"])
    agent = TCPStore(addr, port, world, is_master=False, timeout=MEET_TIMEOUT)
    key = f"fgvc/{env.get('TORCHELASTIC_RUN_ID', '')}/attempt-{attempt}/store-port"
    if rank == 0:
        with socket.socket() as probe:  # a free port on this host (rank 0 is on MASTER_ADDR)
            probe.bind(("", 0))
            new_port = probe.getsockname()[1]
        agent.set(key, str(new_port))
    else:
        new_port = int(agent.get(key).decode())
    # torch.distributed then hosts the new store on rank 0 and connects the others to it
    env["MASTER_PORT"] = str(new_port)
    env["TORCHELASTIC_USE_AGENT_STORE"] = "False"
