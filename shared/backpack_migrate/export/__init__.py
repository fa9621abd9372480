"""Reading a Mozilla Backpack export ZIP by byte range, without holding it in memory.

An export is a ZIP whose root holds ``manifest.txt`` (JSON ``{"<email>": ["<file>", ...]}``)
and the baked badge images it lists. Exports can be gigabytes and list a million learners,
so everything here streams:

- the central directory is read in blocks from the end of the object and yielded entry by entry
  (:mod:`.zipdir`, over the readers of :mod:`.ranges`);
- ``manifest.txt`` is inflated and parsed incrementally, one learner at a time (:mod:`.manifest`,
  joined with the members in :mod:`.learners`);
- a badge image is read back on its own by two ranged reads, local header then data (:mod:`.members`);
- the index of members by name (:mod:`.index`), the marks of which ones the manifest lists and the
  emails met so far stay in memory up to a few thousand entries, then move to a scratch SQLite
  database in a private temporary directory (``/tmp`` on Lambda), removed as soon as the stream
  ends or fails (:mod:`.scratch`).

Whole-export failures raise :class:`ExportError` with a stable code; problems with one learner
or one file are reported as :class:`~backpack_migrate.domain.Problem` values (:mod:`.errors`).

``IN_MEMORY_ENTRIES`` is read from :mod:`.scratch` each time an index or a stream starts, so it
is set on that module; it is not re-exported here, where setting it would change nothing.
"""

from __future__ import annotations

from .errors import MESSAGES, ExportError, MemberError, problem
from .index import MemberIndex, member_index
from .learners import (
    ExportPlan,
    FileEntry,
    LearnerEntry,
    ListingReview,
    PlanStats,
    is_valid_email,
    iter_learners,
    plan_export,
)
from .manifest import FULL_FORMAT_MEMBER, MANIFEST_NAME, ManifestEntry, find_manifest, iter_manifest
from .members import DEFAULT_MAX_SIZE, read_badge_image, read_member, read_member_head, sniff_media_type
from .ranges import BytesRangeReader, FileRangeReader, RangeReader, S3RangeReader, open_export

# shared_files keeps its own scratch tables alongside the member index.
from .scratch import _WITHOUT_ROWID as _WITHOUT_ROWID
from .scratch import _TempDatabase as _TempDatabase
from .zipdir import BLOCK_SIZE, iter_members, starts_with_member

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_MAX_SIZE",
    "FULL_FORMAT_MEMBER",
    "MANIFEST_NAME",
    "MESSAGES",
    "BytesRangeReader",
    "ExportError",
    "ExportPlan",
    "FileEntry",
    "FileRangeReader",
    "LearnerEntry",
    "ListingReview",
    "ManifestEntry",
    "MemberError",
    "MemberIndex",
    "PlanStats",
    "RangeReader",
    "S3RangeReader",
    "find_manifest",
    "is_valid_email",
    "iter_learners",
    "iter_manifest",
    "iter_members",
    "member_index",
    "open_export",
    "plan_export",
    "problem",
    "read_badge_image",
    "read_member",
    "read_member_head",
    "sniff_media_type",
    "starts_with_member",
]
