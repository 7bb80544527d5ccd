"""sea_pyg.io: atomic writes flushed to the disk, the user's file mode, leftovers of killed
writes, a full disk, the folder lock."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sea_pyg.io as sio

IO_FILE = Path(sio.__file__)


def test_atomic_write_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        st = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = sio.atomic_write_text("hello", tmp_path / "a.txt")
    assert synced == [("file", out.stat().st_ino), ("dir", tmp_path.stat().st_ino)]
    synced.clear()
    sio.atomic_torch_save({"x": torch.ones(3)}, tmp_path / "b.pt")
    assert [kind for kind, _ in synced] == ["file", "dir"]
    synced.clear()
    sio.atomic_folder(tmp_path / "f", lambda d: (d / "x.npy").write_bytes(b"1"))
    assert ("file", (tmp_path / "f" / "x.npy").stat().st_ino) in synced
    assert synced[-1] == ("dir", tmp_path.stat().st_ino)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_users_normal_mode(tmp_path, umask, mode):
    """A fresh interpreter with this umask (io.py reads it once, at import) loading io.py
    alone (it imports nothing from the package)."""
    code = (
        "import importlib.util, os, sys\n"
        f"os.umask({umask})\n"
        f"spec = importlib.util.spec_from_file_location('sio', {str(IO_FILE)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"m.atomic_write_text('x', {str(tmp_path / 'a.txt')!r})\n"
        f"m.atomic_write_bytes(b'x', {str(tmp_path / 'b.bin')!r})\n"
        f"m.lock_file({str(tmp_path / '.lock')!r}).release()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("a.txt", "b.bin", ".lock"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_disk_full_is_a_message_and_the_previous_file_stays(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    sio.atomic_torch_save({"epoch": 1}, path)
    before = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        f.write(b"partial checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as err:
        sio.atomic_torch_save({"epoch": 2}, path)
    assert err.value.errno == errno.ENOSPC
    assert f"no space left on the device while writing {path}" in str(err.value)
    assert "MiB free" in str(err.value) and "the previous last.pt is unchanged" in str(err.value)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["last.pt"]
    with pytest.raises(OSError, match="new.pt not written"):
        sio.atomic_torch_save({}, tmp_path / "new.pt")


def test_other_write_errors_pass_unchanged(tmp_path):
    def broken(tmp):
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="^encoder failed$"):
        sio.atomic_write(tmp_path / "x", broken)
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temporaries_removes_only_interrupted_writes(tmp_path):
    names = [".best.pt.k2j_9xq1.tmp", ".results.json.abcdefgh.tmp", ".x.tmp", "a.tmp",
             ".notes", "best.pt"]
    for n in names:
        (tmp_path / n).write_text(n)
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()
    removed = sio.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [
        ".best.pt.k2j_9xq1.tmp", ".results.json.abcdefgh.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".x.tmp", "a.tmp", ".notes", "best.pt", ".dir.abcdefgh.tmp"]
    )


def test_a_killed_write_leaves_only_a_temporary_that_the_cleanup_removes(tmp_path):
    """A child SIGKILLed inside atomic_write (the fault hook) leaves the old file and a
    temporary one."""
    (tmp_path / "r.json").write_text("old")
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('sio', {str(IO_FILE)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"m.atomic_write_text('new', {str(tmp_path / 'r.json')!r})\n"
    )
    env = {**os.environ, "SEA_PYG_FAULT_AT": "2"}  # after the write, before fsync/rename
    proc = subprocess.run([sys.executable, "-c", code], env=env)
    assert proc.returncode == -9
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "r.json"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".r.json.")
    assert (tmp_path / "r.json").read_text() == "old"
    sio.remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_lock_file_is_exclusive_and_reports_its_holder(tmp_path):
    path = tmp_path / ".lock"
    assert not sio.is_locked(path)
    first = sio.lock_file(path, "pid 1 on host")
    assert first is not None and sio.is_locked(path)
    assert sio.lock_file(path, tries=2) is None
    assert sio.lock_note(path) == "pid 1 on host"
    first.release()
    assert not sio.is_locked(path)
    with sio.lock_file(path) as again:
        assert again.held
    assert not again.held and path.exists()
