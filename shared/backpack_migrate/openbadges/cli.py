"""`backpack-migrate verify INPUT [--recipient EMAIL ...] [--serve MAP.json] [--json] [--allow-loopback]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from .fetch import Fetcher, MapFetcher, SafeFetcher
from .model import Issue, Verdict
from .unbake import MAX_IMAGE_BYTES
from .verify import Verifier

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNUSABLE = 2

# Errors that mean the input is not a badge we could even start to check.
UNUSABLE_CODES = frozenset(
    {
        "NOT_AN_IMAGE",
        "IMAGE_TOO_LARGE",
        "NOTHING_BAKED",
        "BAKED_DATA_UNREADABLE",
        "NOT_A_BADGE",
        "MALFORMED_JSON",
        "JWS_MALFORMED",
    }
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backpack-migrate verify",
        description="Verify an Open Badge (baked PNG or SVG, JSON, signed JWS, or hosted URL).",
    )
    parser.add_argument("input", help="a badge file (PNG, SVG, JSON or JWS) or a hosted assertion URL")
    parser.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="EMAIL",
        help="an email address of the learner (repeatable); without it the recipient is not checked",
    )
    parser.add_argument(
        "--serve",
        metavar="MAP.json",
        help="answer fetches from this URL -> file map instead of the network",
    )
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument(
        "--allow-loopback", action="store_true", help="allow fetching from 127.0.0.1 (for local testing)"
    )
    return parser


def is_unusable(verdict: Verdict) -> bool:
    return verdict.assertion is None and any(e.code in UNUSABLE_CODES for e in verdict.errors)


def verdict_json(verdict: Verdict) -> dict[str, object]:
    return {
        "valid": verdict.valid,
        "version": verdict.version,
        "errors": [{"code": i.code, "message": i.message} for i in verdict.errors],
        "warnings": [{"code": i.code, "message": i.message} for i in verdict.warnings],
        "badge": verdict.badge.model_dump(mode="json") if verdict.badge else None,
        "revoked": verdict.revoked,
        "certain_to_fail": verdict.certain_to_fail,
        "payload_kind": verdict.payload_kind,
        "hosted_url": verdict.hosted_url,
    }


def _human(verdict: Verdict, out: TextIO) -> None:
    badge = verdict.badge
    name = badge.badge_class.name if badge and badge.badge_class.name else "this badge"
    version = f" (Open Badges {verdict.version})" if verdict.version else ""
    if verdict.valid:
        headline = "VALID"
    elif is_unusable(verdict):
        headline = "UNUSABLE INPUT"
    else:
        headline = "REVOKED" if verdict.revoked else "NOT VALID"
    out.write(f"{headline}: {name}{version}\n")
    if badge and badge.issuer.name:
        out.write(f"  issued by {badge.issuer.name}")
        if badge.issued_on:
            out.write(f" on {badge.issued_on.date().isoformat()}")
        out.write("\n")
    for issue in verdict.errors:
        out.write(f"  error   {issue.code}: {issue.message}\n")
    for issue in verdict.warnings:
        out.write(f"  warning {issue.code}: {issue.message}\n")


def run_verify(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args_in = list(argv)
    if args_in and args_in[0] == "verify":
        args_in = args_in[1:]
    try:
        args = _parser().parse_args(args_in)
    except SystemExit as exc:
        return EXIT_UNUSABLE if exc.code not in (0, None) else EXIT_VALID

    def unusable(code: str, message: str) -> int:
        err.write(message + "\n")
        if args.json:
            verdict = Verdict(valid=False, errors=[Issue(code=code, message=message)])
            out.write(json.dumps(verdict_json(verdict), indent=2) + "\n")
        return EXIT_UNUSABLE

    fetcher: Fetcher
    if args.serve:
        try:
            fetcher = MapFetcher.from_serve_file(args.serve)
        except (OSError, ValueError) as exc:
            return unusable("SERVE_MAP_UNREADABLE", f"cannot read the serve map {args.serve}: {exc}")
    else:
        fetcher = SafeFetcher(allow_loopback=args.allow_loopback)

    source: bytes | str
    if args.input.lower().startswith(("http://", "https://")):
        source = args.input
    else:
        path = Path(args.input)
        try:
            if path.stat().st_size > MAX_IMAGE_BYTES:
                return unusable("INPUT_TOO_LARGE", f"{args.input} is too large to be a badge")
            source = path.read_bytes()
        except OSError as exc:
            return unusable("INPUT_UNREADABLE", f"cannot read {args.input}: {exc.strerror or exc}")

    verdict = Verifier(fetcher).verify(source, args.recipient)
    if args.json:
        out.write(json.dumps(verdict_json(verdict), indent=2) + "\n")
    else:
        _human(verdict, out)
    if verdict.valid:
        return EXIT_VALID
    return EXIT_UNUSABLE if is_unusable(verdict) else EXIT_INVALID


def main() -> None:  # pragma: no cover - thin wrapper
    raise SystemExit(run_verify(sys.argv[1:]))
