import os
import subprocess
import sys

import pytest

from amips_plugins._io import atomic_path


def test_a_save_removes_what_a_killed_save_left_behind(tmp_path):
    target = tmp_path / "index.amips"
    # A process that dies (kill -9) in the middle of a save leaves its temporary file.
    code = (
        "import os, sys\n"
        "from amips_plugins._io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert len(list(tmp_path.glob(".index.amips.*.tmp"))) == 1
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"done")
    assert [p.name for p in tmp_path.iterdir()] == ["index.amips"]


def test_saved_files_get_the_mode_the_umask_gives(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.npy") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o640


def test_a_running_save_beside_is_left_alone(tmp_path):
    target = tmp_path / "index.amips"
    with atomic_path(target) as first:
        first.write_bytes(b"one")
        with atomic_path(tmp_path / "index.amips") as second:  # this process is alive
            second.write_bytes(b"two")
        assert first.exists()
    assert target.read_bytes() == b"one"


def test_a_directory_is_not_overwritten(tmp_path):
    (tmp_path / "kept").write_bytes(b"x")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        with atomic_path(tmp_path) as tmp:
            tmp.write_bytes(b"y")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))
