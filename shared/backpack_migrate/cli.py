"""``backpack-migrate``: the operator's command line (upload, report, verify, demo, local)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

LOCAL_ENV_FILE = Path(".local-stack") / "env.json"


def _project_root() -> Path | None:
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "template.yaml").is_file() and (folder / "infra" / "local").is_dir():
            return folder
    return None


def _load_local_env() -> None:
    """Point at a running `make local` stack when no AWS target is configured."""
    if "TABLE_NAME" in os.environ or not LOCAL_ENV_FILE.is_file():
        return
    for name, value in json.loads(LOCAL_ENV_FILE.read_text()).items():
        os.environ.setdefault(name, value)


def _stack_outputs(stack: str) -> dict[str, str]:
    import boto3

    answer = boto3.client("cloudformation").describe_stacks(StackName=stack)
    return {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}


def cmd_upload(args: argparse.Namespace) -> int:
    import boto3

    from .config import get_settings

    path = Path(args.export)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    bucket = args.bucket or (_stack_outputs(args.stack)["ExportsBucketName"] if args.stack else None)
    bucket = bucket or get_settings().exports_bucket
    key = f"exports/{args.key or path.name}"
    if not key.endswith(".zip"):
        print("error: exports are ZIP files; the key must end in .zip", file=sys.stderr)
        return 2
    boto3.client("s3").upload_file(str(path), bucket, key)
    print(f"uploaded {path} to s3://{bucket}/{key}; processing starts on its own")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import boto3

    from .config import get_settings
    from .report import export_report, format_report
    from .store import DynamoStore

    settings = get_settings()
    store = DynamoStore(boto3.resource("dynamodb").Table(args.table or settings.table_name))
    exports = store.list_exports()
    if args.export:
        exports = [e for e in exports if args.export in (e.export_id, e.key, e.key.removeprefix("exports/"))]
        if not exports:
            print(f"error: no export {args.export!r} on record", file=sys.stderr)
            return 2
    reports = [export_report(store, export) for export in exports]
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        print("\n\n".join(format_report(r) for r in reports) or "no exports on record")
    return 0


def cmd_local_tools(args: argparse.Namespace) -> int:
    root = _project_root()
    if root is None:
        print("error: run this from the project's folder (where template.yaml is)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from infra.local import demo

    return demo.run_demo(root) if args.command == "demo" else demo.run_local(root)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        from .openbadges.cli import run_verify

        return run_verify(argv[1:])
    parser = argparse.ArgumentParser(prog="backpack-migrate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload", help="upload a Backpack export ZIP to the exports bucket")
    upload.add_argument("export")
    upload.add_argument("--bucket")
    upload.add_argument("--stack", help="a deployed stack whose exports bucket to use")
    upload.add_argument("--key", help="object name under exports/ (default: the file's name)")
    report = commands.add_parser("report", help="learners, badges by outcome and errors of each export")
    report.add_argument("export", nargs="?", help="export id or object key (default: every export)")
    report.add_argument("--table")
    report.add_argument("--json", action="store_true")
    commands.add_parser("verify", help="verify one badge: backpack-migrate verify --help")
    commands.add_parser("demo", help="run the whole migration locally and check the outcome")
    commands.add_parser("local", help="start the local stack and leave it running")
    args = parser.parse_args(argv)
    if args.command in ("demo", "local"):
        return cmd_local_tools(args)
    _load_local_env()
    return {"upload": cmd_upload, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
