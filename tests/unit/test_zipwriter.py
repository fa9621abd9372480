"""The streaming ZIP writer: standard archives, ZIP64 past 65,535 members, flat memory."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import pytest

from backpack_migrate.zipwriter import StreamingZipWriter

pytestmark = pytest.mark.unit


def test_members_written_whole_or_streamed_read_back_with_zipfile(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    with StreamingZipWriter(path) as out:
        out.write("images/a.png", b"\x89PNG not really" * 10, compress=False)
        with out.open("users.jsonl") as member:
            for i in range(10_000):
                member.write(b'{"id": %d}\n' % i)
        out.write("images/é.svg", b"<svg/>")
        out.write("empty.json", b"")
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["images/a.png", "users.jsonl", "images/é.svg", "empty.json"]
        assert archive.getinfo("images/a.png").compress_type == zipfile.ZIP_STORED
        assert archive.read("users.jsonl").count(b"\n") == 10_000
        assert archive.read("images/é.svg") == b"<svg/>"
        assert archive.read("empty.json") == b""


def test_past_65535_members_with_memory_that_does_not_grow(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    tracemalloc.start()
    try:
        with StreamingZipWriter(path) as out:
            for i in range(70_000):
                out.write(f"images/{i:064x}.png", b"x" * 50, compress=False)
                if i == 1_000:
                    early = tracemalloc.get_traced_memory()[0]
            late = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert late - early < 1_000_000  # zipfile would hold ~70,000 ZipInfo objects here
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert len(names) == 70_000
        assert archive.read(names[-1]) == b"x" * 50


def test_one_member_open_at_a_time(tmp_path: Path) -> None:
    with StreamingZipWriter(tmp_path / "b.zip") as out, out.open("a"), pytest.raises(RuntimeError):
        out.open("b")
