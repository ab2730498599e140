"""File writing (:mod:`flowbridge.files`): atomic, so an interrupted write leaves the old
file and no temporary behind."""

from __future__ import annotations

import os

import pytest


def test_writes_are_atomic(tmp_path, monkeypatch):
    from flowbridge.files import write_atomic

    target = tmp_path / "out.py"
    target.write_text("old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new " * 1000)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.py"]
