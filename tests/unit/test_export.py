"""Reading Backpack exports by byte range: good exports, every kind of bad one, hostile input."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tempfile
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backpack_migrate.domain import MemberLocation
from backpack_migrate.export import (
    BytesRangeReader,
    ExportError,
    FileRangeReader,
    MemberError,
    MemberIndex,
    PlanStats,
    S3RangeReader,
    find_manifest,
    iter_learners,
    iter_manifest,
    iter_members,
    member_index,
    plan_export,
    read_badge_image,
    read_member,
    read_member_head,
    sniff_media_type,
)
from backpack_migrate.export import scratch as export_scratch
from infra.local.bakery import bake_png, bake_svg, make_png, make_svg

pytestmark = pytest.mark.unit

PNG = bake_png(make_png("#336699", 16), "https://issuer.example/a/1.json")
SVG = bake_svg(make_svg("#993366", "B"), '{"id": "x"}', "https://issuer.example/a/2.json").encode()
STORED = zipfile.ZIP_STORED
DEFLATED = zipfile.ZIP_DEFLATED


def make_zip(
    members: dict[str, bytes] | list[tuple[str, bytes]],
    *,
    manifest: Any = None,
    manifest_raw: bytes | None = None,
    method: int = STORED,
    manifest_method: int = DEFLATED,
) -> bytes:
    buf = io.BytesIO()
    items = list(members.items()) if isinstance(members, dict) else list(members)
    with zipfile.ZipFile(buf, "w") as zf:
        if manifest_raw is None and manifest is not None:
            manifest_raw = json.dumps(manifest).encode()
        if manifest_raw is not None:
            zf.writestr("manifest.txt", manifest_raw, compress_type=manifest_method)
        for name, data in items:
            zf.writestr(name, data, compress_type=method)
    return buf.getvalue()


def good_export(method: int = STORED) -> bytes:
    manifest = {
        "ada@example.org": ["a.png", "b.svg"],
        "grace@example.org": ["c.png"],
    }
    return make_zip({"a.png": PNG, "b.svg": SVG, "c.png": PNG}, manifest=manifest, method=method)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory the export's scratch databases go to (empty when all are removed)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(params=["memory", "sqlite"])
def paths(request: pytest.FixtureRequest, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with members and emails held in memory, then with both moved to SQLite."""
    monkeypatch.setattr(export_scratch, "IN_MEMORY_ENTRIES", 10**9 if request.param == "memory" else 1)
    return str(request.param)


def code_of(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ExportError) as info:
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    return info.value.code


# ------------------------------------------------------------------------------ good exports


@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_good_export_plans_and_reads_back(method: int, paths: str) -> None:
    reader = BytesRangeReader(good_export(method))
    plan = plan_export(reader)
    assert [learner.email for learner in plan.learners] == ["ada@example.org", "grace@example.org"]
    ada = plan.learners[0]
    assert [f.name for f in ada.files] == ["a.png", "b.svg"]
    assert all(f.problem is None and f.location is not None for f in ada.files)
    assert plan.stats.listed_files == 3
    assert plan.stats.usable_files == 3
    assert plan.stats.unlisted_members == 0
    assert plan.stats.members == 3
    loc = ada.files[0].location
    assert loc is not None
    assert read_member(reader, loc) == PNG
    assert read_badge_image(reader, loc) == (PNG, "image/png")
    svg_loc = ada.files[1].location
    assert svg_loc is not None
    assert read_badge_image(reader, svg_loc) == (SVG, "image/svg+xml")
    assert read_member_head(reader, svg_loc, 20) == SVG[:20]


def test_member_locations_match_zipfile(paths: str) -> None:
    data = good_export(DEFLATED)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        expected = {i.filename: (i.header_offset, i.compress_size, i.file_size, i.CRC) for i in zf.infolist()}
    got = {
        m.name: (m.header_offset, m.compressed_size, m.size, m.crc)
        for m in iter_members(BytesRangeReader(data))
    }
    assert got == expected
    index = member_index(BytesRangeReader(data))
    assert len(index) == 4
    assert isinstance(index["a.png"], MemberLocation)
    assert index["a.png"].method == DEFLATED
    assert "missing.png" not in index


def test_file_reader(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(good_export())
    with FileRangeReader(path) as reader:
        plan = plan_export(reader)
        loc = plan.learners[1].files[0].location
        assert loc is not None
        assert read_member(reader, loc) == PNG


def test_utf8_names_and_directories_and_comment(paths: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("badges/", b"")
        zf.writestr("badges/été.png", PNG)
        zf.writestr("manifest.txt", json.dumps({"a@example.org": ["badges/été.png"]}))
        zf.comment = b"PK\x05\x06 a comment that looks like a signature"
    plan = plan_export(BytesRangeReader(buf.getvalue()))
    assert plan.learners[0].files[0].problem is None
    assert plan.stats.members == 1  # the directory entry is not a member


def test_prepended_data_is_tolerated() -> None:
    data = b"#!/bin/sh\necho self-extracting\n" + good_export()
    reader = BytesRangeReader(data)
    plan = plan_export(reader)
    loc = plan.learners[0].files[0].location
    assert loc is not None
    assert read_member(reader, loc) == PNG


def _zip64_by_hand(members: list[tuple[str, bytes]]) -> bytes:
    """Stored members whose central entries and end record use ZIP64 fields."""
    out = bytearray()
    central = bytearray()
    for name, data in members:
        raw = name.encode()
        crc = zlib.crc32(data)
        offset = len(out)
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 45, 0, 0, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(raw), 20
        )
        out += raw + extra + data
        cextra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            45,
            45,
            0,
            0,
            0,
            0,
            crc,
            0xFFFFFFFF,
            0xFFFFFFFF,
            len(raw),
            len(cextra),
            0,
            0,
            0,
            0,
            0xFFFFFFFF,
        )
        central += raw + cextra
    cd_offset = len(out)
    out += central
    z64_offset = len(out)
    n = len(members)
    out += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
    out += struct.pack("<4sLQL", b"PK\x06\x07", 0, z64_offset, 1)
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def test_zip64_records_and_extra_fields(paths: str) -> None:
    manifest = json.dumps({"a@example.org": ["a.png", "b.svg"]}).encode()
    data = _zip64_by_hand([("a.png", PNG), ("b.svg", SVG), ("manifest.txt", manifest)])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # the hand-made archive is a real ZIP64
        assert zf.read("b.svg") == SVG
    reader = BytesRangeReader(data)
    plan = plan_export(reader)
    files = plan.learners[0].files
    assert [f.problem for f in files] == [None, None]
    assert files[1].location is not None
    assert read_member(reader, files[1].location) == SVG


def test_zip64_with_more_than_65535_entries() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.txt", json.dumps({"a@example.org": ["f65999"]}))
        for i in range(66_000):
            zf.writestr(f"f{i}", b"")
    data = buf.getvalue()
    assert b"PK\x06\x06" in data[-200:]
    reader = BytesRangeReader(data)
    assert sum(1 for _ in iter_members(reader)) == 66_001
    learners = list(iter_learners(reader))
    assert learners[0].files[0].problem is not None
    assert learners[0].files[0].problem.code == "EMPTY_FILE"


def test_central_directory_is_read_in_blocks() -> None:
    members = [(f"badge-{i:05}.png", PNG) for i in range(2000)]
    data = make_zip(members, manifest={"a@example.org": ["badge-00001.png"]})
    reader = BytesRangeReader(data)
    names = iter_members(reader, block_size=4096)
    first = next(names)
    assert first.name == "manifest.txt"
    directory_reads = reader.calls[2:]  # after the end-record search
    assert directory_reads and all(length <= 4096 for _, length in directory_reads)
    assert len(directory_reads) < 5  # lazily: only the first blocks so far
    assert sum(1 for _ in names) == 2000


# ------------------------------------------------------------------------------ S3 reader


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self) -> bytes:
        return self._data

    def close(self) -> None:
        pass


class _ClientError(Exception):
    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class FakeS3:
    def __init__(self, data: bytes, etag: str = '"abc"') -> None:
        self.data = data
        self.etag = etag
        self.calls: list[dict[str, Any]] = []

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        return {"ContentLength": len(self.data), "ETag": self.etag}

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if kwargs.get("IfMatch") != self.etag:
            raise _ClientError("PreconditionFailed", 412)
        first, last = kwargs["Range"].removeprefix("bytes=").split("-")
        return {"Body": _Body(self.data[int(first) : int(last) + 1])}


def test_s3_reader_reads_ranges_pinned_to_etag() -> None:
    data = good_export(DEFLATED)
    s3 = FakeS3(data)
    reader = S3RangeReader(s3, "bucket", "exports/x.zip", block_size=128, cache_blocks=64)
    assert len(data) > 3 * 128
    assert reader.size == len(data)
    assert reader.etag == '"abc"'
    plan = plan_export(reader)
    loc = plan.learners[0].files[0].location
    assert loc is not None
    assert read_member(reader, loc) == PNG
    assert all(call["IfMatch"] == '"abc"' for call in s3.calls)
    assert reader.requests == len(s3.calls) <= len(data) // 128 + 1  # each block fetched once at most
    assert reader.read(len(data), 10) == b""
    assert reader.read(100, 50) == data[100:150]  # across two blocks
    s3.etag = '"replaced"'
    with pytest.raises(ExportError) as info:
        reader.read(0, len(data))
    assert info.value.code == "EXPORT_CHANGED"


def test_s3_reader_on_moto() -> None:
    import boto3
    from moto import mock_aws

    data = good_export()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="exports")
        s3.put_object(Bucket="exports", Key="x.zip", Body=data)
        reader = S3RangeReader(s3, "exports", "x.zip")
        plan = plan_export(reader)
        assert plan.stats.usable_files == 3
        with pytest.raises(ExportError) as info:
            S3RangeReader(s3, "exports", "x.zip", etag='"not-it"', size=len(data)).read(0, 10)
        assert info.value.code == "EXPORT_CHANGED"
        with pytest.raises(ExportError) as info:
            S3RangeReader(s3, "exports", "gone.zip")
        assert info.value.code == "EXPORT_GONE"


def test_s3_reader_by_version_survives_a_replacement_and_names_a_deleted_version_gone() -> None:
    import boto3
    from moto import mock_aws

    data = good_export()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="exports")
        s3.put_bucket_versioning(Bucket="exports", VersioningConfiguration={"Status": "Enabled"})
        first = s3.put_object(Bucket="exports", Key="x.zip", Body=data)
        s3.put_object(Bucket="exports", Key="x.zip", Body=b"a corrected export")
        reader = S3RangeReader(s3, "exports", "x.zip", first["ETag"], version_id=first["VersionId"])
        assert reader.size == len(data)
        assert plan_export(reader).stats.usable_files == 3
        # Without the version, the ETag pin sees the replacement.
        with pytest.raises(ExportError) as info:
            S3RangeReader(s3, "exports", "x.zip", first["ETag"], size=len(data)).read(0, 10)
        assert info.value.code == "EXPORT_CHANGED"
        s3.delete_object(Bucket="exports", Key="x.zip", VersionId=first["VersionId"])
        with pytest.raises(ExportError) as info:
            S3RangeReader(s3, "exports", "x.zip", first["ETag"], version_id=first["VersionId"])
        assert info.value.code == "EXPORT_GONE"


# ------------------------------------------------------------------------------ bad exports


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", PNG, b"\x00" * 100, b"PK", json.dumps({"a": ["b"]}).encode()],
    ids=["empty", "text", "png", "zeros", "pk", "json"],
)
def test_not_a_zip(data: bytes) -> None:
    assert code_of(plan_export, BytesRangeReader(data)) == "NOT_A_ZIP"


def test_truncated_zip_at_every_point(paths: str, scratch: Path) -> None:
    """Cut anywhere: either the manifest is lost with the cut, or what precedes the cut is read
    and every listed file past it is on record as cut off; nothing in between."""
    data = good_export(DEFLATED)
    manifest_end = data.index(b"PK\x03\x04", 4)  # the manifest is the first member
    for cut in range(4, len(data) - 1, 7):
        reader = BytesRangeReader(data[:cut])
        if cut < manifest_end:
            assert code_of(plan_export, reader) == "TRUNCATED_ZIP", cut
            continue
        plan = plan_export(reader)
        assert plan.stats.cut_short, cut
        for learner in plan.learners:
            for file in learner.files:
                if file.location is None:
                    assert file.problem is not None and file.problem.code == "FILE_CUT_OFF", (cut, file)
                else:
                    assert file.problem is None and read_member(reader, file.location) in {PNG, SVG}, cut
    for cut in range(1, 4):
        assert code_of(plan_export, BytesRangeReader(data[:cut])) in {"TRUNCATED_ZIP", "NOT_A_ZIP"}
    assert not any(scratch.iterdir())  # no scratch database left behind by any failure


def test_a_cut_export_whose_members_carry_data_descriptors_is_read_up_to_the_cut() -> None:
    class Unseekable(io.RawIOBase):  # zipfile then writes sizes and CRC after each member's data
        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, chunk: Any) -> int:
            self.data += bytes(chunk)
            return len(chunk)

    out = Unseekable()
    manifest = {"ada@example.org": ["a.png", "b.svg", "c.png"]}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.txt", json.dumps(manifest))
        members = (
            ("a.png", PNG, True),  # a zip64 descriptor: 8-byte sizes
            ("big.bin", bytes(21 * 1024 * 1024), False),  # larger than any badge: stepped over
            ("b.svg", SVG, False),
            ("c.png", PNG, False),
        )
        for name, body, zip64 in members:
            with zf.open(name, "w", force_zip64=zip64) as member:
                member.write(body)
    data = bytes(out.data)
    assert data[6] & 0x08  # really written with data descriptors
    cut = data.index(b"PK\x03\x04", data.index(b"b.svg")) + 10  # inside c.png's header
    reader = BytesRangeReader(data[:cut])
    plan = plan_export(reader)
    (ada,) = plan.learners
    read = {f.name: read_member(reader, f.location) for f in ada.files if f.location is not None}
    assert read == {"a.png": PNG, "b.svg": SVG}
    assert [f.problem.code for f in ada.files if f.problem is not None] == ["FILE_CUT_OFF"]


def _eocd_pos(data: bytes) -> int:
    return data.rindex(b"PK\x05\x06")


def _read_from_local_headers(data: bytes) -> None:
    plan = plan_export(BytesRangeReader(data))
    assert plan.stats.cut_short and plan.stats.usable_files == 3
    with member_index(BytesRangeReader(data)) as index:
        assert index.cut_short and sorted(index) == ["a.png", "b.svg", "c.png", "manifest.txt"]


def test_central_directory_offset_beyond_size() -> None:
    data = bytearray(good_export())
    pos = _eocd_pos(bytes(data))
    struct.pack_into("<L", data, pos + 16, len(data) + 1000)
    _read_from_local_headers(bytes(data))


def test_bad_central_signature() -> None:
    data = bytearray(good_export())
    first = data.index(b"PK\x01\x02")
    data[first + 3] = 0x09
    _read_from_local_headers(bytes(data))


def test_wrong_entry_count(paths: str, scratch: Path) -> None:
    data = bytearray(good_export())
    pos = _eocd_pos(bytes(data))
    struct.pack_into("<HH", data, pos + 8, 9, 9)
    _read_from_local_headers(bytes(data))
    assert not any(scratch.iterdir())


def test_a_damaged_directory_with_no_local_headers_to_fall_back_on_is_truncated() -> None:
    data = bytearray(good_export())
    data[0:4] = b"PK00"  # spanning marker: what follows is not a local header
    pos = _eocd_pos(bytes(data))
    struct.pack_into("<L", data, pos + 16, len(data) + 1000)
    assert code_of(plan_export, BytesRangeReader(bytes(data))) == "TRUNCATED_ZIP"


def test_no_manifest(paths: str, scratch: Path) -> None:
    assert code_of(plan_export, BytesRangeReader(make_zip({"a.png": PNG}))) == "NO_MANIFEST"
    nested = make_zip({"export/manifest.txt": b"{}", "a.png": PNG})
    assert code_of(plan_export, BytesRangeReader(nested)) == "NO_MANIFEST"
    assert code_of(iter_learners, BytesRangeReader(nested)) == "NO_MANIFEST"
    assert not any(scratch.iterdir())


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"hello",
        b"{",
        b'{"a@example.org": [}',
        b'{"a@example.org": ["a.png",]}',
        b'{"a@example.org": ["a.png"],}',
        b'{"a@example.org" ["a.png"]}',
        b'{"a@example.org": ["a.png"]} trailing',
        b"{'a@example.org': ['a.png']}",
        b'{"a@example.org": ["a\\qb.png"]}',
        b'{"a@example.org": ["a.png"]',
        b'{"\xff\xfe": []}',
        b"{1: []}",
    ],
)
@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_manifest_not_json(raw: bytes, method: int) -> None:
    data = make_zip({"a.png": PNG}, manifest_raw=raw, manifest_method=method)
    assert code_of(plan_export, BytesRangeReader(data)) == "MANIFEST_NOT_JSON"


@pytest.mark.parametrize("manifest", [[], ["a.png"], "a.png", 3, "null", True])
def test_manifest_bad_shape(manifest: Any) -> None:
    raw = b"null" if manifest == "null" else json.dumps(manifest).encode()
    data = make_zip({"a.png": PNG}, manifest_raw=raw)
    with pytest.raises(ExportError) as info:
        plan_export(BytesRangeReader(data))
    assert info.value.code == "MANIFEST_BAD_SHAPE"
    assert "(" in info.value.message  # says what was wrong


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a.png", "its value is a string, not a list of file names"),
        (3, "its value is a number, not a list of file names"),
        (-2.5e3, "its value is a number, not a list of file names"),
        (None, "its value is null, not a list of file names"),
        (False, "its value is a boolean, not a list of file names"),
        ({"a.png": True}, "its value is an object, not a list of file names"),
        ({"x": {"y": [1, {"z": None}]}}, "its value is an object, not a list of file names"),
        ([1], "its list holds a number where a file name should be"),
        ([["a.png"]], "its list holds a list where a file name should be"),
    ],
)
def test_an_entry_that_is_not_a_list_of_file_names_costs_only_itself(
    value: Any, reason: str, paths: str
) -> None:
    manifest = {"ada@example.org": ["a.png"], "bob@example.org": value, "cy@example.org": ["c.png"]}
    members = {"a.png": PNG, "c.png": PNG}
    plan = plan_export(BytesRangeReader(make_zip(members, manifest=manifest)))
    ada, bob, cy = plan.learners
    assert [f.name for f in ada.files] == ["a.png"] and ada.problems == []
    assert [f.name for f in cy.files] == ["c.png"] and cy.problems == []
    assert bob.files == []
    [refused] = bob.problems
    assert refused.code == "MANIFEST_ENTRY_REFUSED"
    assert refused.message.endswith(f"({reason})")
    assert plan.stats.learner_problems == {"MANIFEST_ENTRY_REFUSED": 1}
    assert plan.stats.refused_entries == 0  # said on the learner, who has a valid address


def test_a_list_keeps_its_file_names_and_refuses_the_rest(paths: str) -> None:
    manifest = {"ada@example.org": ["a.png", None, 7, "c.png", {"k": "v"}]}
    plan = plan_export(BytesRangeReader(make_zip({"a.png": PNG, "c.png": PNG}, manifest=manifest)))
    [ada] = plan.learners
    assert [f.name for f in ada.files] == ["a.png", "c.png"]
    [refused] = ada.problems
    assert refused.message.endswith(
        "(its list holds null where a file name should be; its list holds a number where a file "
        "name should be; its list holds an object where a file name should be)"
    )


def test_a_refused_entry_without_a_valid_email_is_on_the_export_report(paths: str) -> None:
    raw = b'{"ada@example.org": ["a.png"], "not an email": 42, "also bad": "x.png"}'
    stats = PlanStats()
    learners = list(iter_learners(BytesRangeReader(make_zip({"a.png": PNG}, manifest_raw=raw)), stats=stats))
    assert len(learners) == 3
    assert stats.refused_entries == 2
    assert stats.refused_examples == [
        "entry #2: its value is a number, not a list of file names",
        "entry #3: its value is a string, not a list of file names",
    ]
    from backpack_migrate.intake import _plan_problems

    [report] = [p for p in _plan_problems(stats) if p.code == "MANIFEST_ENTRIES_REFUSED"]
    assert "2 entries" in report.message and "entry #2" in report.message
    assert "@" not in report.message  # no address on the report


def test_manifest_with_bom_and_whitespace_is_fine() -> None:
    raw = b'\xef\xbb\xbf \n{ "  Ada@Example.org " :\t[ "a.png" ] }\n'
    plan = plan_export(BytesRangeReader(make_zip({"a.png": PNG}, manifest_raw=raw)))
    assert plan.learners[0].email == "Ada@Example.org"
    assert plan.learners[0].normalized_email == "ada@example.org"
    assert plan.learners[0].problems == []


def test_empty_manifest_object(paths: str) -> None:
    plan = plan_export(BytesRangeReader(make_zip({"a.png": PNG}, manifest={})))
    assert plan.learners == []
    assert plan.stats.unlisted_members == 1
    assert plan.stats.unlisted_examples == ["a.png"]


def test_per_entry_problems(paths: str) -> None:
    manifest = {
        "ada@example.org": ["a.png", "missing.png", "notes.png", "empty.png", "big.png", "a.png"],
        "not an email": ["b.svg"],
        "ADA@example.org": ["c.png"],
    }
    members = {
        "a.png": PNG,
        "b.svg": SVG,
        "c.png": PNG,
        "notes.png": b"these are my notes, not an image",
        "empty.png": b"",
        "big.png": PNG + b"\0" * 5000,
        "stray.png": PNG,
    }
    reader = BytesRangeReader(make_zip(members, manifest=manifest, method=DEFLATED))
    plan = plan_export(reader, max_size=4000)
    assert len(plan.learners) == 2
    ada, other = plan.learners
    codes = {f.name: f.problem.code if f.problem else None for f in ada.files}
    assert codes == {
        "a.png": None,
        "missing.png": "FILE_MISSING",
        "notes.png": "NOT_AN_IMAGE",
        "empty.png": "EMPTY_FILE",
        "big.png": "FILE_TOO_LARGE",
        "c.png": None,  # merged from the duplicate email
    }
    assert [p.code for p in ada.problems] == ["DUPLICATE_EMAIL"]
    assert [p.code for p in other.problems] == ["INVALID_EMAIL"]
    assert plan.stats.unlisted_members == 1
    assert plan.stats.unlisted_examples == ["stray.png"]
    assert plan.stats.distinct_learners == 2
    assert plan.stats.learners == 3
    assert plan.stats.file_problems == {
        "FILE_MISSING": 1,
        "NOT_AN_IMAGE": 1,
        "EMPTY_FILE": 1,
        "FILE_TOO_LARGE": 1,
    }


def test_streaming_marks_duplicates_instead_of_merging(paths: str) -> None:
    manifest_raw = b'{"a@example.org": ["a.png"], "A@EXAMPLE.ORG": ["a.png"]}'
    reader = BytesRangeReader(make_zip({"a.png": PNG}, manifest_raw=manifest_raw))
    first, second = iter_learners(reader)
    assert not first.duplicate
    assert second.duplicate
    assert [p.code for p in second.problems] == ["DUPLICATE_EMAIL"]


def test_without_sniffing_nothing_but_the_directory_is_read() -> None:
    data = make_zip({"notes.png": b"not an image"}, manifest={"a@example.org": ["notes.png"]})
    plan = plan_export(BytesRangeReader(data), sniff=False)
    assert plan.learners[0].files[0].problem is None
    with pytest.raises(MemberError) as info:
        loc = plan.learners[0].files[0].location
        assert loc is not None
        read_badge_image(BytesRangeReader(data), loc)
    assert info.value.code == "NOT_AN_IMAGE"


# ------------------------------------------------------------------------------ members


def _only(data: bytes, name: str) -> MemberLocation:
    return member_index(BytesRangeReader(data))[name]


def test_crc_mismatch_is_corrupt_file() -> None:
    data = bytearray(make_zip({"a.png": PNG}, manifest={}))
    pos = data.index(PNG[20:40])
    data[pos] ^= 0xFF
    reader = BytesRangeReader(bytes(data))
    with pytest.raises(MemberError) as info:
        read_member(reader, _only(bytes(data), "a.png"))
    assert info.value.code == "CORRUPT_FILE"


def test_unsupported_compression_and_encryption() -> None:
    data = make_zip({"a.png": PNG}, manifest={})
    reader = BytesRangeReader(data)
    loc = _only(data, "a.png")
    bzip = loc.model_copy(update={"method": 12})
    with pytest.raises(MemberError) as info:
        read_member(reader, bzip)
    assert info.value.code == "UNSUPPORTED_COMPRESSION"
    encrypted = bytearray(data)
    struct.pack_into("<H", encrypted, loc.header_offset + 6, 1)
    with pytest.raises(MemberError) as info:
        read_member(BytesRangeReader(bytes(encrypted)), loc)
    assert info.value.code == "ENCRYPTED_FILE"
    with pytest.raises(MemberError) as info:
        read_member(reader, loc, max_size=10)
    assert info.value.code == "FILE_TOO_LARGE"


def test_deflate_bomb_is_bounded() -> None:
    bomb = b"\0" * 5_000_000
    data = make_zip({"bomb.png": bomb}, manifest={}, method=DEFLATED)
    loc = _only(data, "bomb.png")
    lie = loc.model_copy(update={"size": 100})  # a directory that lies about the size
    with pytest.raises(MemberError) as info:
        read_member(BytesRangeReader(data), lie, max_size=100_000)
    assert info.value.code == "CORRUPT_FILE"
    assert read_member_head(BytesRangeReader(data), loc, 64) == b"\0" * 64


def test_sniff_media_type() -> None:
    assert sniff_media_type(PNG) == "image/png"
    assert sniff_media_type(SVG) == "image/svg+xml"
    assert sniff_media_type(b"<svg/>") == "image/svg+xml"
    assert sniff_media_type(b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- hi -->\n<!DOCTYPE svg>\n<svg>') == (
        "image/svg+xml"
    )
    assert sniff_media_type(b"<svg:svg xmlns:svg='http://www.w3.org/2000/svg'>") == "image/svg+xml"
    assert sniff_media_type("<svg>".encode("utf-16")) == "image/svg+xml"
    assert sniff_media_type(b"<html><svg></svg></html>") is None
    assert sniff_media_type(b"GIF89a") is None
    assert sniff_media_type(zlib.compress(SVG)) is None
    assert sniff_media_type(b"") is None


# ------------------------------------------------------------------------------ bounded reading


def _big_manifest(learners: int) -> bytes:
    return json.dumps(
        {f"learner{i}@example.org": [f"b{i}-{j}.png" for j in range(3)] for i in range(learners)}
    ).encode()


@pytest.mark.parametrize("method", [STORED, DEFLATED])
def test_iter_manifest_reads_in_bounded_blocks(method: int) -> None:
    raw = _big_manifest(20_000)
    data = make_zip([], manifest_raw=raw, manifest_method=method)
    reader = BytesRangeReader(data)
    loc = _only(data, "manifest.txt")
    reader.calls.clear()
    entries = iter_manifest(reader, loc, block_size=8192)
    email, files, _refused = next(entries)
    assert email == "learner0@example.org"
    assert files == ["b0-0.png", "b0-1.png", "b0-2.png"]
    assert sum(length for _, length in reader.calls) <= 8192 + 30 + 64  # header + one block
    count = 1 + sum(1 for _ in entries)
    assert count == 20_000
    assert all(length <= 8192 for _, length in reader.calls[1:])
    assert sum(length for _, length in reader.calls[1:]) == loc.compressed_size


def test_iter_manifest_memory_does_not_grow_with_learners() -> None:
    raw = _big_manifest(30_000)  # about 2 MB of JSON
    data = make_zip([], manifest_raw=raw, manifest_method=DEFLATED)
    reader = BytesRangeReader(data)
    loc = _only(data, "manifest.txt")
    reader.calls.clear()
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_manifest(reader, loc, block_size=8192))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert len(raw) > 2_000_000
    assert peak < len(raw) // 5


def test_find_manifest(paths: str) -> None:
    loc, index = find_manifest(BytesRangeReader(good_export()))
    assert loc.name == "manifest.txt"
    assert set(index) == {"manifest.txt", "a.png", "b.svg", "c.png"}


# ------------------------------------------------------------------------------ bounded joining


def _many_members_export(members: int, learners: int) -> bytes:
    """``members`` empty files; learner i lists b{i}, b{i+1} and a missing file; every 7th email twice."""
    manifest: list[str] = []
    for i in range(learners):
        files = json.dumps([f"b{i}", f"b{(i + 1) % members}", f"gone{i}"])
        manifest.append(f'"learner{i}@example.org": {files}')
        if i % 7 == 0:
            manifest.append(f'"LEARNER{i}@example.org ": {json.dumps([f"b{i}", "extra"])}')
    raw = ("{" + ", ".join(manifest) + "}").encode()
    # Stored, the manifest is read a block at a time (inflating it may buffer a few hundred KB).
    return make_zip([(f"b{i}", b"") for i in range(members)], manifest_raw=raw, manifest_method=STORED)


def _stream(data: bytes) -> tuple[list[Any], PlanStats]:
    stats = PlanStats()
    learners = [entry.model_dump() for entry in iter_learners(BytesRangeReader(data), stats=stats)]
    return learners, stats


def test_memory_and_sqlite_paths_give_the_same_join(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _many_members_export(members=600, learners=200)
    monkeypatch.setattr(export_scratch, "IN_MEMORY_ENTRIES", 10**9)
    in_memory = _stream(data)
    assert not any(scratch.iterdir())  # nothing was written to disk
    monkeypatch.setattr(export_scratch, "IN_MEMORY_ENTRIES", 50)
    in_sqlite = _stream(data)
    assert in_sqlite == in_memory
    learners, stats = in_sqlite
    assert stats.members == 600
    assert stats.learners == 200 + 29
    assert stats.distinct_learners == 200
    assert stats.learner_problems == {"DUPLICATE_EMAIL": 29}
    assert [entry["duplicate"] for entry in learners[:3]] == [False, True, False]
    assert stats.file_problems == {"EMPTY_FILE": 201 * 2 - 2 + 29, "FILE_MISSING": 200 + 29}
    assert stats.unlisted_members == 600 - 201  # b0..b200 are listed
    assert stats.unlisted_examples == [f"b{i}" for i in range(201, 221)]  # in directory order
    assert not any(scratch.iterdir())


def _with_duplicates(members: list[tuple[str, bytes]], manifest: Any) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: duplicate name
        return make_zip(members, manifest=manifest, method=DEFLATED)


@pytest.mark.parametrize("where", ["apart", "together"])
def test_two_different_files_under_one_listed_name_are_refused_as_ambiguous(paths: str, where: str) -> None:
    other = bake_png(make_png("#cc3333", 16), "https://elsewhere.example/a/9.json")
    filler = [(f"f{i:03}.png", PNG) for i in range(40)]
    members = (
        [("a.png", PNG), *filler, ("a.png", other)]
        if where == "apart"
        else [("a.png", PNG), ("a.png", other), *filler]
    )
    members += [("same.png", PNG), ("same.png", PNG), ("c.png", PNG)]
    manifest = {"ada@example.org": ["a.png", "same.png", "c.png"]}
    plan = plan_export(BytesRangeReader(_with_duplicates(members, manifest)))
    [ada] = plan.learners
    by_name = {f.name: f for f in ada.files}
    refused = by_name["a.png"]
    assert refused.problem is not None and refused.problem.code == "AMBIGUOUS_FILE"
    assert "two different files" in refused.problem.message
    assert refused.location is None  # neither copy is ever read
    # The same bytes twice are no ambiguity; the others are untouched.
    assert by_name["same.png"].problem is None and by_name["c.png"].problem is None
    assert plan.stats.file_problems == {"AMBIGUOUS_FILE": 1}
    assert plan.stats.unlisted_members == 40


def test_member_index_moves_to_sqlite_past_the_limit(scratch: Path) -> None:
    members = [(f"m{i:03}.png", bytes([i % 251]) * (i + 1)) for i in range(120)]
    members.insert(30, ("m007.png", b"the later entry wins"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: duplicate name
        data = make_zip(members, manifest={}, method=DEFLATED)
    reader = BytesRangeReader(data)
    small = member_index(reader, memory_entries=10**9)
    with member_index(reader, memory_entries=16) as big:
        assert small.in_memory and small.database_path is None
        assert not big.in_memory
        path = big.database_path
        assert path is not None and Path(path).is_file() and Path(path).parent.parent == scratch
        assert len(big) == len(small) == 121
        assert list(big) == list(small)  # directory order; the duplicate keeps the first place
        assert dict(big.items()) == dict(small.items())
        assert read_member(reader, big["m007.png"]) == b"the later entry wins"
        assert big.ambiguous("m007.png") and small.ambiguous("m007.png")
        assert not big.ambiguous("m008.png") and not small.ambiguous("m008.png")
        assert "m119.png" in big and "nope.png" not in big and 7 not in big
        assert "\ud800.png" not in big  # not even encodable: no directory name is like it
        assert big.get("nope.png") is None
        with pytest.raises(KeyError):
            big["nope.png"]
    assert not any(scratch.iterdir())
    with pytest.raises(ValueError, match="closed"):
        big["m001.png"]


def test_member_index_keeps_64_bit_values(scratch: Path) -> None:
    huge = MemberLocation.model_construct(
        name="huge.png", header_offset=2**63 + 5, compressed_size=2**64 - 1, size=2**63, method=8, crc=7
    )
    with MemberIndex([huge], memory_entries=0) as index:
        assert not index.in_memory
        assert index["huge.png"] == huge
        index.add(huge.model_copy(update={"size": 3}))
        assert index["huge.png"].size == 3
        assert len(index) == 1


def test_lone_surrogate_file_name_is_missing(paths: str) -> None:
    raw = b'{"a@example.org": ["a.png", "\\ud800.png"]}'
    learners = list(iter_learners(BytesRangeReader(make_zip({"a.png": PNG}, manifest_raw=raw))))
    assert [f.problem.code if f.problem else None for f in learners[0].files] == [None, "FILE_MISSING"]


def test_an_index_joined_twice_counts_afresh(paths: str, scratch: Path) -> None:
    data = _many_members_export(members=40, learners=10)
    reader = BytesRangeReader(data)
    _manifest, index = find_manifest(reader)
    with index:
        first, second = PlanStats(), PlanStats()
        list(iter_learners(reader, index=index, stats=first))
        list(iter_learners(reader, index=index, stats=second))
        assert first == second
        assert first.unlisted_members == 40 - 11
        assert len(index) == 41  # a caller's index stays open after the stream
    assert not any(scratch.iterdir())


def _scratch_files(scratch: Path) -> list[Path]:
    return [p for p in scratch.rglob("*") if p.is_file()]


def test_scratch_databases_are_removed_when_the_stream_ends(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_scratch, "IN_MEMORY_ENTRIES", 10)
    data = _many_members_export(members=100, learners=40)
    stream = iter_learners(BytesRangeReader(data))
    next(stream)
    assert len(_scratch_files(scratch)) == 1  # the member index
    for _ in range(15):
        next(stream)
    assert len(_scratch_files(scratch)) == 2  # and the emails met so far
    assert sum(1 for _ in stream) == 40 + 6 - 16
    assert not any(scratch.iterdir())


def test_scratch_databases_are_removed_after_an_error_midway(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_scratch, "IN_MEMORY_ENTRIES", 10)
    entries = ", ".join(f'"l{i}@example.org": ["b{i}"]' for i in range(30))
    raw = ("{" + entries + ', "broken@example.org": ["b1"] oops}').encode()
    data = make_zip([(f"b{i}", PNG) for i in range(50)], manifest_raw=raw)
    stream = iter_learners(BytesRangeReader(data))
    seen = 0
    with pytest.raises(ExportError) as info:
        for _ in stream:
            seen += 1
            assert len(_scratch_files(scratch)) >= 1
    assert info.value.code == "MANIFEST_NOT_JSON"
    assert seen == 31  # the error comes after the last entry is read
    assert not any(scratch.iterdir())
    # A consumer that stops early: closing the stream removes them too.
    stream = iter_learners(BytesRangeReader(data))
    next(stream)
    assert _scratch_files(scratch)
    stream.close()
    assert not any(scratch.iterdir())
    # And so does plan_export when it fails.
    assert code_of(plan_export, BytesRangeReader(data), sniff=False) == "MANIFEST_NOT_JSON"
    assert not any(scratch.iterdir())


def test_stale_scratch_of_a_dead_process_is_swept(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = scratch / f"backpack-export-{2**22 + 12345}-abc"  # beyond any pid_max: that process is gone
    stale.mkdir()
    (stale / "scratch.sqlite").write_bytes(b"left by a Lambda that timed out")
    unrelated = scratch / "backpack-export-notes"
    unrelated.mkdir()
    monkeypatch.setattr(export_scratch, "_swept", False)
    with MemberIndex([_only(good_export(), "a.png")], memory_entries=0) as index:
        assert index.database_path is not None
        assert not stale.exists()
        assert unrelated.exists()
    assert [p.name for p in scratch.iterdir()] == ["backpack-export-notes"]


def test_join_memory_does_not_grow_with_members_and_learners(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_scratch, "IN_MEMORY_ENTRIES", 256)

    def traced_peak(members: int, learners: int) -> int:
        reader = BytesRangeReader(_many_members_export(members, learners))
        stats = PlanStats()
        tracemalloc.start()
        try:
            for _ in iter_learners(reader, stats=stats):
                pass
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert stats.distinct_learners == learners
        return peak

    small = traced_peak(5_000, 2_000)
    big = traced_peak(20_000, 8_000)
    # Held in memory, 15,000 more members and 6,000 more learners would take several MB.
    assert big < small + 256 * 1024, (small, big)
    assert not any(scratch.iterdir())


# ------------------------------------------------------------------------------ hostile input

# More examples for a longer hunt: HYPOTHESIS_EXAMPLES=5000 pytest -k hostile
FUZZ = settings(
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.too_slow],
)


def _consume(data: bytes) -> None:
    reader = BytesRangeReader(data)
    try:
        plan = plan_export(reader)
    except ExportError:
        return
    for learner in plan.learners:
        for f in learner.files:
            if f.location is not None:
                with contextlib.suppress(MemberError):
                    read_badge_image(reader, f.location, max_size=1_000_000)


@FUZZ
@given(st.binary(max_size=2000))
def test_hostile_bytes_end_in_export_errors(data: bytes) -> None:
    _consume(data)
    _consume(b"PK\x03\x04" + data)
    _consume(data + b"PK\x05\x06" + data[:18])


@FUZZ
@given(st.data())
def test_mutated_exports_end_in_export_errors(data: st.DataObject) -> None:
    base = bytearray(good_export(data.draw(st.sampled_from([STORED, DEFLATED]))))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    _consume(bytes(base))
    _consume(bytes(base[:cut]))
    _consume(bytes(base[cut:]))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12,
)
manifests = st.one_of(
    json_values,
    st.dictionaries(st.text(), st.lists(st.text(), max_size=4), max_size=6),
    st.dictionaries(st.text(), st.lists(st.text(), max_size=4) | json_values, max_size=6),
)


class _Obj(list[Any]):
    """A JSON object read with ``object_pairs_hook``: its pairs in order, duplicates kept."""


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, _Obj) else value


def _kind_of(value: Any) -> str:
    if isinstance(value, dict | _Obj):
        return "an object"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _expected_entry(key: str, value: Any) -> tuple[str, list[str], list[str]]:
    """What the manifest reader must make of one key: its file names and what it refused."""
    if not isinstance(value, list):
        return key.strip(), [], [f"its value is {_kind_of(value)}, not a list of file names"]
    files = [x for x in value if isinstance(x, str)]
    refused = [
        f"its list holds {_kind_of(x)} where a file name should be" for x in value if not isinstance(x, str)
    ]
    return key.strip(), files, refused


@FUZZ
@given(manifests, st.sampled_from([STORED, DEFLATED]), st.integers(1, 64), st.booleans())
def test_hostile_manifests_match_the_json_reference(
    value: Any, method: int, block: int, indent: bool
) -> None:
    raw = json.dumps(value, indent=2 if indent else None, ensure_ascii=False).encode()
    data = make_zip([], manifest_raw=raw, manifest_method=method)
    reader = BytesRangeReader(data)
    loc = _only(data, "manifest.txt")
    if isinstance(value, dict):
        # Every entry is read, whatever the others hold: bad values are refused one by one.
        assert [tuple(e) for e in iter_manifest(reader, loc, block_size=block)] == [
            _expected_entry(k, v) for k, v in value.items()
        ]
    else:
        assert code_of(iter_manifest, reader, loc, block_size=block) == "MANIFEST_BAD_SHAPE"


@FUZZ
@given(st.text(alphabet='{}[]",: \n\\abu0123456789@.', max_size=80), st.integers(1, 16))
def test_hostile_manifest_text_never_escapes(text: str, block: int) -> None:
    data = make_zip([], manifest_raw=text.encode(), manifest_method=DEFLATED)
    reader = BytesRangeReader(data)
    loc = _only(data, "manifest.txt")
    try:
        reference = json.loads(text, object_pairs_hook=_Obj)
    except ValueError:
        reference = None
    try:
        got = [tuple(e) for e in iter_manifest(reader, loc, block_size=block)]
    except ExportError as exc:
        assert exc.code in {"MANIFEST_NOT_JSON", "MANIFEST_BAD_SHAPE"}
        if reference is not None:
            # JSON, yet refused as a whole: only when it is not an object at all.
            assert exc.code == "MANIFEST_BAD_SHAPE" and not isinstance(reference, _Obj)
        return
    assert isinstance(reference, _Obj)
    assert got == [_expected_entry(k, _plain(v)) for k, v in reference]
