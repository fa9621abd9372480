"""Random access to an export's bytes: in memory, in a local file, or ranged reads of S3."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from backpack_migrate.domain import ExportRecord

from .errors import ExportError


class RangeReader(Protocol):
    """Random access to the bytes of an export: ``read`` may return fewer bytes at the end."""

    @property
    def size(self) -> int: ...

    def read(self, start: int, length: int) -> bytes: ...


class BytesRangeReader:
    """Range reads over bytes already in memory (tests, small uploads)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self.size = len(data)
        self.calls: list[tuple[int, int]] = []  # (start, length) of every read, for tests

    def read(self, start: int, length: int) -> bytes:
        self.calls.append((start, length))
        if start < 0 or length < 0:
            raise ValueError("negative range")
        return bytes(self._data[start : start + length])


class FileRangeReader:
    """Range reads over a local file (command line, benchmarks)."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        self._file.seek(0, 2)
        self.size = self._file.tell()

    def read(self, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError("negative range")
        self._file.seek(start)
        return self._file.read(length)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileRangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3RangeReader:
    """Ranged GetObject reads pinned to one version of the object.

    With a ``version_id`` (the bucket is versioned, and S3 events carry it) every read names
    that version, so replacing the object under the same key changes nothing for this reader.
    Without one the reads are pinned by ETag: if the object is replaced while it is read, S3
    answers 412 and :class:`ExportError` ``EXPORT_CHANGED`` is raised.

    Small reads are served from aligned blocks of ``block_size`` bytes, the last
    ``cache_blocks`` of which are kept, so walking the central directory, the manifest and
    neighbouring images costs one request per block.
    """

    def __init__(
        self,
        s3_client: Any,
        bucket: str,
        key: str,
        etag: str | None = None,
        *,
        version_id: str | None = None,
        size: int | None = None,
        block_size: int = 256 * 1024,
        cache_blocks: int = 4,
    ) -> None:
        self._s3 = s3_client
        self.bucket = bucket
        self.key = key
        self.block_size = block_size
        self.cache_blocks = max(1, cache_blocks)
        self.requests = 0
        # "null" is the id S3 gives objects written before versioning was turned on.
        self._version = {"VersionId": version_id} if version_id and version_id != "null" else {}
        if size is None or etag is None:
            condition = {"IfMatch": etag} if etag else {}
            head = self._call(self._s3.head_object, Bucket=bucket, Key=key, **self._version, **condition)
            size = int(head["ContentLength"])
            etag = etag or str(head["ETag"])
        self.size = size
        self.etag = etag
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            response = getattr(exc, "response", None)
            if not isinstance(response, dict):
                raise
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in {"PreconditionFailed", "412"} or status == 412:
                raise ExportError("EXPORT_CHANGED") from exc
            if code in {"NoSuchKey", "NoSuchVersion", "404", "NotFound"} or status == 404:
                raise ExportError("EXPORT_GONE") from exc
            if code == "AccessDenied" and "exports/" in self.key:
                # The functions may read exports/* but not list the bucket, so S3 answers a
                # missing (expired) export with 403, not 404.
                raise ExportError("EXPORT_GONE") from exc
            raise

    def _get(self, start: int, length: int) -> bytes:
        self.requests += 1
        response = self._call(
            self._s3.get_object,
            Bucket=self.bucket,
            Key=self.key,
            Range=f"bytes={start}-{start + length - 1}",
            IfMatch=self.etag,
            **self._version,
        )
        body = response["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def _block(self, number: int) -> bytes:
        block = self._blocks.get(number)
        if block is None:
            start = number * self.block_size
            block = self._get(start, min(self.block_size, self.size - start))
            self._blocks[number] = block
            while len(self._blocks) > self.cache_blocks:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(number)
        return block

    def read(self, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError("negative range")
        length = min(length, self.size - start)
        if length <= 0:
            return b""
        first, last = start // self.block_size, (start + length - 1) // self.block_size
        if last - first + 1 > 2:  # a large read: fetch it as it is
            return self._get(start, length)
        data = b"".join(self._block(n) for n in range(first, last + 1))
        offset = start - first * self.block_size
        return data[offset : offset + length]


def open_export(svc: Any, export: ExportRecord) -> S3RangeReader:
    """A reader of the export's object in S3, pinned to its version (or ETag)."""
    # S3 events carry the ETag bare; If-Match wants it quoted.
    etag = '"' + export.etag.strip('"') + '"'
    return S3RangeReader(
        svc.s3, export.bucket, export.key, etag=etag, version_id=export.version_id, size=export.size or None
    )
