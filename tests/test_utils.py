"""ppml.utils: atomic writes keep the old file on failure and set sensible permissions."""

from __future__ import annotations

import os
import stat

import pytest

from ppml.keys import BlockScrambleKey
from ppml.utils import atomic_write, atomic_write_json, atomic_write_text, quiet


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as f:
            f.write("{half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == '{\n  "a": 1\n}\n'
    assert [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_permissions_follow_umask_and_keys_are_private(tmp_path):
    atomic_write_text(tmp_path / "fig.md", "x")
    with open(tmp_path / "plain.md", "w") as f:  # what open() gives under the process umask
        f.write("x")
    BlockScrambleKey.generate(image_size=32, block_size=8, seed=0).save(tmp_path / "k.json")
    assert _mode(tmp_path / "fig.md") == _mode(tmp_path / "plain.md")
    assert _mode(tmp_path / "k.json") == 0o600


def test_rejects_append_mode(tmp_path):
    with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
        with atomic_write(tmp_path / "x", "a"):
            pass


def test_quiet_under_pytest():
    assert quiet()
