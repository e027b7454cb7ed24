"""fgvc.utils.locks.file_lock: one holder at a time, and no lock file left behind."""

from __future__ import annotations

import threading
import time

from fgvc.utils.locks import file_lock


def test_file_lock_excludes_concurrent_holders(tmp_path):
    """Read-modify-write under the lock from 6 threads (flock is per open file, so threads
    contend like processes); the holder removes the lock file at every release."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    lock = tmp_path / "counter.lock"
    holders = []

    def work():
        for _ in range(15):
            with file_lock(lock) as locked:
                assert locked
                holders.append(threading.get_ident())
                value = int(counter.read_text())
                time.sleep(0.0005)
                counter.write_text(str(value + 1))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert counter.read_text() == "90"
    assert len(set(holders)) == 6
    assert not lock.exists()


def test_a_link_planted_at_the_lock_path_is_not_followed(tmp_path):
    """In a shared cache, another user could point <dest>.lock at a file of yours; it must
    not be opened, let alone made writable for everyone."""
    import os

    import pytest

    mine = tmp_path / "bashrc"
    mine.write_text("secrets\n")
    mine.chmod(0o600)
    lock = tmp_path / "weights.pth.lock"
    os.symlink(mine, lock)
    with pytest.raises(OSError), file_lock(lock):
        pass
    assert (mine.stat().st_mode & 0o777) == 0o600 and mine.read_text() == "secrets\n"
