"""``backpack-migrate``: the operator's commands (upload, report, watch, redrive, verify, export-db, ...)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .export_db_command import EXPORT_COMMANDS, add_export_commands, run_export_command

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


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped into a file or another program: wide enough that no table cell is cut.
        console.width = max(console.width, 160)
    return console


def cmd_upload(args: argparse.Namespace) -> int:
    import boto3

    from .config import get_settings
    from .console import upload_with_progress
    from .intake import export_id_for

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
    s3 = boto3.client("s3")
    # The bar goes to stderr so that stdout keeps only the lines a script reads.
    from rich.console import Console

    upload_with_progress(s3, path, bucket, key, Console(stderr=True))
    head = s3.head_object(Bucket=bucket, Key=key)
    export_id = export_id_for(bucket, key, head["ETag"])
    print(f"uploaded {path} to s3://{bucket}/{key}; processing starts on its own")
    print(f"export id: {export_id}")
    return 0


def _reports(store: Any, wanted: str | None) -> list[dict[str, Any]] | None:
    from .report import export_report

    exports = store.list_exports()
    if wanted:
        exports = [e for e in exports if wanted in (e.export_id, e.key, e.key.removeprefix("exports/"))]
        if not exports:
            return None
    return [export_report(store, export) for export in exports]


def _store(args: argparse.Namespace) -> Any:
    import boto3

    from .config import get_settings
    from .store import DynamoStore

    table = args.table or (_stack_outputs(args.stack)["TableName"] if args.stack else None)
    return DynamoStore(boto3.resource("dynamodb").Table(table or get_settings().table_name))


def cmd_report(args: argparse.Namespace) -> int:
    store = _store(args)
    reports = _reports(store, args.export)
    if reports is None:
        print(f"error: no export {args.export!r} on record", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    from .console import print_reports
    from .report import format_reconcile_run

    print_reports(reports, _console())
    last_run = store.last_reconcile_run()
    if last_run is not None:
        print("\n" + format_reconcile_run(last_run))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from .console import watch

    store = _store(args)
    if _reports(store, args.export) is None:
        print(f"error: no export {args.export!r} on record", file=sys.stderr)
        return 2
    done = watch(
        lambda: _reports(store, args.export) or [],
        _console(),
        interval=args.interval,
        timeout=args.timeout,
    )
    if not done:
        print("still working when the time ran out", file=sys.stderr)
        return 1
    print("settled: every badge is final or waits for its learner")
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    import boto3

    from .config import get_settings
    from .redrive import QUEUES, RedriveError, redrive

    name = args.queue
    if name.startswith(("http://", "https://")):
        queue_url = name
    elif name in QUEUES and args.stack:
        queue_url = _stack_outputs(args.stack)[f"{QUEUES[name]}Url"]
    elif name in QUEUES:
        queue_url = getattr(get_settings(), f"{name}_queue_url")
    else:
        print(
            f"error: unknown queue {name!r}; name one of {', '.join(QUEUES)} or a queue URL", file=sys.stderr
        )
        return 2
    if not queue_url:
        print(f"error: no URL known for the {name} queue; pass --stack", file=sys.stderr)
        return 2
    try:
        result = redrive(boto3.client("sqs"), queue_url, limit=args.limit)
    except RedriveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"moved {result.moved} jobs back to the {name} queue; {result.left} left in its dead-letter queue")
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
    report.add_argument("--stack", help="a deployed stack whose table to read")
    report.add_argument("--json", action="store_true", help="the report as JSON (a stable format)")
    watch = commands.add_parser("watch", help="live progress of each export until nothing is in flight")
    watch.add_argument("export", nargs="?", help="export id or object key (default: every export)")
    watch.add_argument("--table")
    watch.add_argument("--stack", help="a deployed stack whose table to read")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between looks (default 2)")
    watch.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    redrive = commands.add_parser("redrive", help="move dead-lettered jobs back to their queue")
    redrive.add_argument("queue", help="chunk, verify, notify or migrate (or a queue URL)")
    redrive.add_argument("--stack", help="a deployed stack whose queues to use")
    redrive.add_argument("--limit", type=int, help="move at most this many jobs")
    commands.add_parser("verify", help="verify one badge: backpack-migrate verify --help")
    commands.add_parser("demo", help="run the whole migration locally and check the outcome")
    commands.add_parser("local", help="start the local stack and leave it running")
    add_export_commands(commands)
    args = parser.parse_args(argv)
    if args.command in ("demo", "local"):
        return cmd_local_tools(args)
    _load_local_env()
    if args.command in EXPORT_COMMANDS:
        return run_export_command(args, upload=cmd_upload)
    commands_run = {"upload": cmd_upload, "report": cmd_report, "watch": cmd_watch, "redrive": cmd_redrive}
    return commands_run[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
