"""Why an export, or one file of it, cannot be read: stable codes and one sentence for each."""

from __future__ import annotations

from backpack_migrate.domain import Problem

# One clear sentence per stable code.
MESSAGES: dict[str, str] = {
    # The export as a whole
    "NOT_A_ZIP": "The file is not a ZIP archive, so it cannot be a Mozilla Backpack export.",
    "TRUNCATED_ZIP": "The ZIP archive is cut short or damaged; please upload the complete export again.",
    "NO_MANIFEST": "The ZIP archive has no manifest.txt at its root, so it is not a Mozilla Backpack export.",
    "MANIFEST_NOT_JSON": "The manifest.txt of the export is not valid JSON.",
    "MANIFEST_BAD_SHAPE": "The manifest.txt of the export does not map emails to lists of badge files.",
    "MANIFEST_ENTRY_REFUSED": (
        "This learner's entry in the manifest is not a list of badge file names, "
        "so what it holds instead was not read."
    ),
    "MANIFEST_ENTRIES_REFUSED": (
        "Entries of the manifest without a valid email address were not lists of badge file names, "
        "so they were not read."
    ),
    "EXPORT_CHANGED": "The export file was replaced while it was being read; it will be read again.",
    "EXPORT_GONE": "The export file is no longer in storage.",
    # One learner or one file
    "INVALID_EMAIL": "This entry of the manifest is not a valid email address.",
    "DUPLICATE_EMAIL": "This email address appears more than once in the manifest; its badges were merged.",
    "FILE_MISSING": "The manifest lists this file, but it is not in the ZIP archive.",
    "AMBIGUOUS_FILE": (
        "The ZIP archive holds two different files under this name, so we cannot know which one "
        "was meant; neither was read."
    ),
    "FILE_CUT_OFF": "This file was in the part of the export that was cut off.",
    "ZIP_CUT_SHORT": "The end of the ZIP archive is missing or damaged: the files before it were read.",
    "EMPTY_FILE": "This file is empty.",
    "FILE_TOO_LARGE": "This file is too large to be a badge image.",
    "NOT_AN_IMAGE": "This file is not a PNG or SVG image, so it cannot hold a badge.",
    "UNSUPPORTED_COMPRESSION": "This file is compressed in a way we cannot read.",
    "ENCRYPTED_FILE": "This file is encrypted inside the ZIP archive, so it cannot be read.",
    "CORRUPT_FILE": "This file is damaged inside the ZIP archive.",
}


class ExportError(Exception):
    """The export (or one member of it) cannot be read. ``code`` is stable; ``message`` is one sentence."""

    def __init__(self, code: str, message: str | None = None) -> None:
        self.code = code
        self.message = message or MESSAGES.get(code, code)
        super().__init__(f"{code}: {self.message}")

    @property
    def problem(self) -> Problem:
        return Problem(code=self.code, message=self.message)


class MemberError(ExportError):
    """One member of the ZIP cannot be read; the rest of the export is fine."""


def problem(code: str, detail: str | None = None) -> Problem:
    """A :class:`Problem` with the standard sentence for ``code`` (plus an optional detail)."""
    message = MESSAGES.get(code, code)
    if detail:
        message = f"{message} ({detail})"
    return Problem(code=code, message=message)
