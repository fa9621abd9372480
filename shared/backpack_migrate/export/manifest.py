"""``manifest.txt``: inflated and parsed as it is read, one learner's entry at a time."""

from __future__ import annotations

import codecs
import json
import re
import zlib
from collections.abc import Iterator
from typing import NamedTuple

from backpack_migrate.domain import MemberLocation

from .errors import MESSAGES, ExportError
from .index import MemberIndex, member_index
from .members import _data_offset
from .ranges import RangeReader
from .zipdir import BLOCK_SIZE

MANIFEST_NAME = "manifest.txt"
# The member a full-fidelity export (``export-db``) writes first: fullexport.FORMAT_MEMBER.
FULL_FORMAT_MEMBER = "format.json"

_WS = re.compile(r"[ \t\n\r]*")
_MAX_TOKEN = 64 * 1024  # characters in one email or file name
_MAX_SKIPPED_DEPTH = 256  # nesting of a value skipped over as not a list of file names
_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_LITERAL_RUN = re.compile(r"[-+.0-9a-zA-Z]*")
_JSON_KINDS = {
    "{": "an object",
    "[": "a list",
    '"': "a string",
    "t": "a boolean",
    "f": "a boolean",
    "n": "null",
}


def _kind(ch: str) -> str | None:
    if ch in _JSON_KINDS:
        return _JSON_KINDS[ch]
    if ch == "-" or ch.isdigit():
        return "a number"
    return None


def _manifest_text(reader: RangeReader, loc: MemberLocation, block_size: int) -> Iterator[str]:
    """The manifest's text in pieces: ranged reads, inflated and decoded incrementally, CRC-checked."""
    if loc.method not in (0, 8):
        raise ExportError(
            "MANIFEST_NOT_JSON", "The manifest.txt of the export is compressed in a way we cannot read."
        )
    start, _flags = _data_offset(reader, loc, member_errors=False)
    end = start + loc.compressed_size
    inflater = zlib.decompressobj(-15) if loc.method == 8 else None
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    crc = 0
    produced = 0
    pos = start
    pending = b""
    cap = block_size * 4  # most text produced from one piece of input
    while True:
        if inflater is not None and pending:
            feed, pending = pending, b""
        elif pos < end and not (inflater is not None and inflater.eof):
            feed = reader.read(pos, min(block_size, end - pos))
            if not feed:
                raise ExportError("TRUNCATED_ZIP")
            pos += len(feed)
        elif inflater is not None and not inflater.eof:
            feed = b""  # output may still be pending inside the inflater
        else:
            break
        if inflater is None:
            data = feed
        else:
            try:
                data = inflater.decompress(feed, cap)
            except zlib.error:
                raise ExportError("TRUNCATED_ZIP") from None
            pending = inflater.unconsumed_tail
            if not feed and not data:
                break
        produced += len(data)
        if produced > loc.size:
            raise ExportError("TRUNCATED_ZIP")
        crc = zlib.crc32(data, crc)
        try:
            text = decoder.decode(data)
        except UnicodeDecodeError:
            raise ExportError(
                "MANIFEST_NOT_JSON", "The manifest.txt of the export is not UTF-8 text."
            ) from None
        if text:
            yield text
    if produced != loc.size or crc != loc.crc:
        raise ExportError("TRUNCATED_ZIP")
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ExportError("MANIFEST_NOT_JSON", "The manifest.txt of the export is not UTF-8 text.") from None
    if tail:
        yield tail


class _Scanner:
    """A sliding text buffer over the manifest pieces, holding at most one token plus one block."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._decoder = json.JSONDecoder()

    def _more(self) -> bool:
        if self.eof:
            return False
        piece = next(self._pieces, None)
        if piece is None:
            self.eof = True
            return False
        if self.pos:
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += piece
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the text)."""
        while True:
            match = _WS.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def expect(self, allowed: str, where: str, *, value: bool = False) -> str:
        """Consume one of ``allowed``; at a value position other JSON is a shape error."""
        ch = self.peek()
        if ch and ch in allowed:
            self.pos += 1
            return ch
        if value or not ch:
            raise self._unexpected(ch, where)
        raise ExportError("MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where}).")

    def _unexpected(self, ch: str, where: str) -> ExportError:
        if not ch:
            return ExportError(
                "MANIFEST_NOT_JSON", f"The manifest.txt of the export ends too early ({where})."
            )
        kind = _kind(ch)
        if kind is None or ch in ",:]}":
            return ExportError(
                "MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where})."
            )
        return ExportError("MANIFEST_BAD_SHAPE", f"{MESSAGES['MANIFEST_BAD_SHAPE']} ({where}, found {kind})")

    def string(self, where: str, *, is_key: bool = False) -> str:
        ch = self.peek()
        if ch != '"':
            if is_key and ch:
                raise ExportError(
                    "MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where})."
                )
            raise self._unexpected(ch, where)
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                incomplete = exc.msg.startswith("Unterminated") or exc.pos >= len(self.buf) - 6
                if not incomplete or self.eof:
                    raise ExportError(
                        "MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where})."
                    ) from None
                if len(self.buf) - self.pos > _MAX_TOKEN:
                    raise ExportError(
                        "MANIFEST_BAD_SHAPE",
                        f"{MESSAGES['MANIFEST_BAD_SHAPE']} ({where} is longer than {_MAX_TOKEN} characters)",
                    ) from None
                self._more()
                continue
            self.pos = end
            assert isinstance(value, str)
            return value

    def literal(self, where: str) -> None:
        """Consume a number, ``true``, ``false`` or ``null``."""
        while True:
            # The whole run of literal characters must be in the buffer before it is judged.
            run = _LITERAL_RUN.match(self.buf, self.pos)
            end = run.end() if run else self.pos
            if end < len(self.buf) or self.eof:
                if _LITERAL.fullmatch(self.buf, self.pos, end):
                    self.pos = end
                    return
                break
            if end - self.pos > _MAX_TOKEN or not self._more():
                if self.eof and _LITERAL.fullmatch(self.buf, self.pos, len(self.buf)):
                    self.pos = len(self.buf)
                    return
                break
        raise ExportError("MANIFEST_NOT_JSON", f"The manifest.txt of the export is not valid JSON ({where}).")

    def skip_value(self, where: str) -> str:
        """Consume one JSON value of any shape, checking it is JSON; returns what kind it was."""
        kind = _kind(self.peek())
        if kind is None or self.peek() in ",:]}":
            raise self._unexpected(self.peek(), where)
        open_containers: list[str] = []  # the closing character of each container we are in
        want_value = True
        while True:
            if want_value:
                ch = self.peek()
                if ch in ("{", "["):
                    self.pos += 1
                    if len(open_containers) >= _MAX_SKIPPED_DEPTH:
                        raise ExportError(
                            "MANIFEST_BAD_SHAPE",
                            f"{MESSAGES['MANIFEST_BAD_SHAPE']} ({where}, nested too deeply)",
                        )
                    close = "}" if ch == "{" else "]"
                    open_containers.append(close)
                    if self.peek() == close:
                        self.pos += 1
                        open_containers.pop()
                        want_value = False
                    elif close == "}":
                        self.string(where, is_key=True)
                        self.expect(":", where)
                    continue
                if ch == '"':
                    self.string(where)
                elif _kind(ch) is not None:
                    self.literal(where)
                else:
                    self.expect("", where)  # raises: not JSON, or ends too early
                want_value = False
            if not open_containers:
                return kind or "a value"
            close = open_containers[-1]
            if self.expect("," + close, where) == close:
                open_containers.pop()
                continue
            if close == "}":
                self.string(where, is_key=True)
                self.expect(":", where)
            want_value = True


class ManifestEntry(NamedTuple):
    """One key of the manifest: the email as written (stripped), its file names, and what in its
    value was not a file name (one sentence-part each, empty for a well-formed entry)."""

    email: str
    files: list[str]
    refused: list[str] = []


def iter_manifest(
    reader: RangeReader,
    location: MemberLocation,
    *,
    block_size: int = BLOCK_SIZE,
    max_files_per_learner: int = 100_000,
) -> Iterator[ManifestEntry]:
    """Yield a :class:`ManifestEntry` for every key of ``manifest.txt``, in order, parsing as it reads.

    Memory stays bounded by one block plus one learner's entry. The email is only stripped
    of surrounding whitespace; duplicate keys are yielded as they come. A manifest that is not
    JSON raises ``MANIFEST_NOT_JSON``; one that is not a JSON object raises ``MANIFEST_BAD_SHAPE``.
    A value that is not a list of file names (a string, a number, an object, null) costs only its
    own entry: it is skipped and named in ``refused``, and so is each item of a list that is not a
    file name, so one bad entry never fails the learners around it.
    """
    scan = _Scanner(_manifest_text(reader, location, block_size))
    ch = scan.peek()
    if ch == "":
        raise ExportError("MANIFEST_NOT_JSON", "The manifest.txt of the export is empty.")
    scan.expect("{", "the manifest must be one JSON object", value=True)
    index = 0
    if scan.peek() == "}":
        scan.pos += 1
    else:
        while True:
            index += 1
            email = scan.string(f"key #{index} must be an email string", is_key=True)
            scan.expect(":", f"after key #{index}")
            files: list[str] = []
            refused: list[str] = []
            where = f"the value of key #{index}"
            if scan.peek() != "[":
                refused.append(f"its value is {scan.skip_value(where)}, not a list of file names")
            elif scan.expect("[", where) and scan.peek() == "]":
                scan.pos += 1
            else:
                while True:
                    if scan.peek() == '"':
                        files.append(scan.string(f"the list of key #{index}"))
                    else:
                        kind = scan.skip_value(f"the list of key #{index}")
                        refused.append(f"its list holds {kind} where a file name should be")
                    if len(files) + len(refused) > max_files_per_learner:
                        raise ExportError(
                            "MANIFEST_BAD_SHAPE",
                            f"{MESSAGES['MANIFEST_BAD_SHAPE']} (key #{index} lists more than "
                            f"{max_files_per_learner} files)",
                        )
                    if scan.expect(",]", f"in the list of key #{index}") == "]":
                        break
            yield ManifestEntry(email.strip(), files, refused)
            if scan.expect(",}", f"after the value of key #{index}") == "}":
                break
    if scan.peek() != "":
        raise ExportError(
            "MANIFEST_NOT_JSON", "The manifest.txt of the export has text after its JSON object."
        )


def find_manifest(reader: RangeReader) -> tuple[MemberLocation, MemberIndex]:
    """The manifest's location and the index of all members (one walk of the central directory).

    The caller owns the index: close it (or use it in a ``with``) to remove its temporary database.
    """
    index = member_index(reader)
    manifest = index.get(MANIFEST_NAME)
    if manifest is None:
        index.close()
        raise ExportError("TRUNCATED_ZIP" if index.cut_short else "NO_MANIFEST")
    return manifest, index
