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

The names below load from their modules on first use, not with the package: a function that
only reads a badge back (``open_export``, ``read_member``) never loads the manifest reader, the
member index or SQLite.

``IN_MEMORY_ENTRIES`` is read from :mod:`.scratch` each time an index or a stream starts, so it
is set on that module; it is not re-exported here, where setting it would change nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
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

_MODULE_OF = {
    "MESSAGES": "errors",
    "ExportError": "errors",
    "MemberError": "errors",
    "problem": "errors",
    "MemberIndex": "index",
    "member_index": "index",
    "ExportPlan": "learners",
    "FileEntry": "learners",
    "LearnerEntry": "learners",
    "ListingReview": "learners",
    "PlanStats": "learners",
    "is_valid_email": "learners",
    "iter_learners": "learners",
    "plan_export": "learners",
    "FULL_FORMAT_MEMBER": "manifest",
    "MANIFEST_NAME": "manifest",
    "ManifestEntry": "manifest",
    "find_manifest": "manifest",
    "iter_manifest": "manifest",
    "DEFAULT_MAX_SIZE": "members",
    "read_badge_image": "members",
    "read_member": "members",
    "read_member_head": "members",
    "sniff_media_type": "members",
    "BytesRangeReader": "ranges",
    "FileRangeReader": "ranges",
    "RangeReader": "ranges",
    "S3RangeReader": "ranges",
    "open_export": "ranges",
    "_WITHOUT_ROWID": "scratch",
    "_TempDatabase": "scratch",
    "BLOCK_SIZE": "zipdir",
    "iter_members": "zipdir",
    "starts_with_member": "zipdir",
}


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


__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, __all__)
