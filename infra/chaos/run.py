"""`make chaos`: the demo export plus generated learners through the local stack, with the real
handlers, while Badgr, the workers and AWS fail at the given rates; then the tally.

The tally is taken against what really happened: each badge's recorded state against its
expected outcome, and against what the Badgr sandbox itself holds for the learner.

    python -m infra.chaos.run [--badgr 0.3] [--kills 0.15] [--aws 0.03] [--learners 100] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backpack_migrate.badgr import BadgrClient
from backpack_migrate.domain import BadgeState
from infra.chaos.faults import AwsThrottle, FaultyBadgr, WorkerKiller
from infra.local import aws_calls
from infra.local.badgr_sandbox import BadgrSandbox
from infra.local.demo import CLIENT_ID, _quiet, is_invitation, links_by_email, play_learner
from infra.local.issuer_site import IssuerSite
from infra.local.sample_export import build_demo
from infra.local.stack import LocalStack

log = logging.getLogger("backpack_migrate.chaos")

HELD_STATES = {BadgeState.IMPORTED, BadgeState.ALREADY_IN_BADGR, BadgeState.PENDING}
WORKER_QUEUES = ("ChunkQueue", "VerifyQueue", "NotifyQueue", "MigrateQueue")


@dataclass
class ChaosConfig:
    badgr_rate: float = 0.30  # share of Badgr API calls that meet a fault
    kill_rate: float = 0.15  # share of migrate invocations killed mid-batch
    aws_rate: float = 0.03  # share of the functions' DynamoDB/SQS calls throttled
    extra_learners: int = 100  # generated learners with five good badges each, beside the demo's
    demo_learners: bool = True  # the demo's own learners, with their deliberate problems
    seed: int = 2019
    time_scale: float = 0.01
    migrate_workers: int = 8
    hang_s: float = 11.0
    kill_functions: tuple[str, ...] = ("MigrateFunction",)
    timeout_s: float = 1800.0


@dataclass
class Tally:
    badges: int = 0
    final: int = 0
    final_pct: float = 0.0
    lost: int = 0
    contradictions: int = 0
    mislabelled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    dlq_messages: int = 0
    retries: int = 0
    learners: int = 0
    invited_once: int = 0
    every_learner_invited_once: bool = False
    wall_s: float = 0.0
    faults: dict[str, Any] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)


def run_chaos(root: Path, config: ChaosConfig, work: Path | None = None) -> Tally:
    started = time.monotonic()
    work = work or root / ".local-stack" / "chaos"
    site_dir = work / "site"
    site_dir.mkdir(parents=True, exist_ok=True)
    client_secret = secrets.token_urlsafe(24)
    with IssuerSite(site_dir) as site:
        world = build_demo(
            work, site.url, extra_learners=config.extra_learners, demo_learners=config.demo_learners
        )
        with BadgrSandbox(CLIENT_ID, client_secret, redirect_uris=[]) as sandbox:
            for account in world.accounts:
                sandbox.add_account(
                    account.username, account.password, [(e.email, e.verified) for e in account.emails]
                )
            direct = BadgrClient(sandbox.url, CLIENT_ID, client_secret)
            for username, assertions in world.preimport.items():
                token = sandbox.issue_token(username)["access_token"]
                for assertion_url in assertions:
                    direct.import_badge(token, url=assertion_url)
            with FaultyBadgr(sandbox.url, config.badgr_rate, config.seed, config.hang_s) as proxy:
                stack = LocalStack(
                    root,
                    badgr_api_url=proxy.url,
                    badgr_authorize_url=sandbox.authorize_endpoint,
                    badgr_client_secret=client_secret,
                    env_overrides={
                        "BADGR_CLIENT_ID": CLIENT_ID,
                        "EMAILS_PER_SECOND": "100",
                        "LEARNERS_PER_CHUNK": "10",
                    },
                    time_scale=config.time_scale,
                    max_concurrency={"MigrateQueue": config.migrate_workers},
                )
                with stack:
                    from backpack_migrate.services import reset_services

                    reset_services()
                    sandbox.redirect_uris.append(f"{stack.url}/oauth/callback")
                    killer = WorkerKiller(config.kill_rate, config.seed + 1, set(config.kill_functions))
                    throttle = AwsThrottle(config.aws_rate, config.seed + 2)
                    stack.invoker.kill_policy = killer
                    aws_calls.add_hook(throttle)
                    try:
                        return _migrate_and_tally(stack, sandbox, proxy, throttle, world, config, started)
                    finally:
                        aws_calls.remove_hook(throttle)
                        stack.invoker.kill_policy = None
                        reset_services()


def _migrate_and_tally(
    stack: LocalStack,
    sandbox: BadgrSandbox,
    proxy: FaultyBadgr,
    throttle: AwsThrottle,
    world: Any,
    config: ChaosConfig,
    started: float,
) -> Tally:
    import boto3

    from backpack_migrate.services import get_services

    boto3.client("s3").upload_file(
        str(world.zip_path), stack.resource("ExportsBucket"), "exports/backpack-chaos.zip"
    )
    deadline = started + config.timeout_s
    learners = sorted({learner.email.strip().lower() for learner in world.learners})
    accounts = {a.username: a for a in world.accounts}
    account_of = {learner.email.strip().lower(): accounts[learner.account] for learner in world.learners}
    _wait_quiet(stack, deadline)
    # Each learner opens the link and moves, and clicks again if the page failed them.
    played: set[str] = set()
    while time.monotonic() < deadline and len(played) < len(learners):
        links = links_by_email(stack)
        for email in learners:
            if email in played or email not in links:
                continue
            account = account_of[email]
            try:
                play_learner(links[email], account.username, account.password)
                played.add(email)
            except Exception as error:  # a 500 from a throttled write: the learner tries again
                log.info("a learner's move failed (%s); they will try again", error)
        if len(played) < len(learners):
            time.sleep(1)
    svc = get_services()
    expected = {(b.email.strip().lower(), b.file): b for b in world.expected}
    id_of = {email: svc.learner_id(email) for email in learners}
    # Wait until every badge is settled (the reconciler may need a few rounds, and a badge given
    # up on after an import of ours was sent has its second look a stale-deadline later).
    while time.monotonic() < deadline:
        records = [b for lid in id_of.values() for b in svc.store.list_badges(lid)]
        if len(records) >= len(expected) and all(b.settled for b in records):
            break
        time.sleep(1)
    _wait_quiet(stack, deadline)
    tally = _tally(stack, sandbox, world, expected, id_of, account_of)
    tally.wall_s = round(time.monotonic() - started, 1)
    tally.faults = {
        "badgr_rate": config.badgr_rate,
        "kill_rate": config.kill_rate,
        "aws_rate": config.aws_rate,
        "seed": config.seed,
        "badgr_calls": proxy.calls,
        "badgr_faults": dict(proxy.injected),
        "killed_invocations": stack.invoker.killed,
        "throttled_calls": sum(throttle.throttled.values()),
        "learners_who_could_not_move": len(learners) - len(played),
    }
    return tally


def _wait_quiet(stack: LocalStack, deadline: float) -> None:
    try:
        stack.wait_idle(timeout=max(1.0, deadline - time.monotonic()))
    except TimeoutError as busy:
        log.warning("%s", busy)


def _tally(
    stack: LocalStack,
    sandbox: BadgrSandbox,
    world: Any,
    expected: dict[tuple[str, str], Any],
    id_of: dict[str, str],
    account_of: dict[str, Any],
) -> Tally:
    from backpack_migrate.services import get_services

    svc = get_services()
    tally = Tally(badges=len(expected), learners=len(id_of))
    held: dict[str, list[str]] = {
        username: [str(a.get("openBadgeId")) for a in sandbox.assertions_of(username)]
        for username in {a.username for a in account_of.values()}
    }
    tally.duplicates = sum(len(ids) - len(set(ids)) for ids in held.values())
    for email, learner_id in id_of.items():
        records = {b.file_name: b for b in svc.store.list_badges(learner_id)}
        username = account_of[email].username
        for (owner, file_name), want in expected.items():
            if owner != email:
                continue
            badge = records.get(file_name)
            if badge is None or not badge.settled:
                tally.lost += 1
                where = "no record" if badge is None else badge.state.value
                if badge is not None and badge.awaiting_second_look:
                    where += ", awaiting its second look"
                _example(tally, "lost", f"{file_name} of {email}: {where}")
                continue
            tally.final += 1
            in_badgr = want.assertion_id is not None and want.assertion_id in held[username]
            if badge.state == BadgeState.DEAD_LETTERED:
                # True when Badgr does not hold it (else a contradiction, below): Badgr failed
                # every try, and the learner is told so. Counted on its own line.
                tally.dead_lettered += 1
            elif badge.state != want.state:
                tally.mislabelled += 1
                _example(
                    tally,
                    "mislabelled",
                    f"{file_name} of {email}: {badge.state.value}, expected {want.state.value}",
                )
            if (badge.state in HELD_STATES) != in_badgr:
                tally.contradictions += 1
                _example(
                    tally,
                    "contradiction",
                    f"{file_name} of {email}: recorded {badge.state.value}, Badgr "
                    f"{'holds' if in_badgr else 'does not hold'} it",
                )
    tally.final_pct = round(100.0 * tally.final / max(1, tally.badges), 2)
    tally.dlq_messages = sum(stack.dlq_depth(queue) for queue in WORKER_QUEUES)
    tally.retries = sum(stack.sqs.redeliveries.values())
    invitations = Counter(e["to"][0].lower() for e in stack.sent_emails() if is_invitation(e["subject"]))
    tally.invited_once = sum(1 for email in id_of if invitations.get(email) == 1)
    for email in sorted(set(id_of) | set(invitations)):
        if invitations.get(email) != 1:
            _example(tally, "invited", f"{email}: {invitations.get(email, 0)} invitations")
    tally.every_learner_invited_once = tally.invited_once == len(id_of) and set(invitations) <= set(id_of)
    return tally


def _example(tally: Tally, kind: str, text: str) -> None:
    """Up to ten examples of each kind of failure, so a few stuck badges hide no contradiction."""
    if sum(example.startswith(f"{kind}: ") for example in tally.examples) < 10:
        tally.examples.append(f"{kind}: {text}")


def print_tally(tally: Tally) -> None:
    faults = tally.faults
    print(
        f"Chaos run: {tally.badges} badges of {tally.learners} learners; faults: Badgr "
        f"{faults['badgr_rate']:.0%} ({sum(faults['badgr_faults'].values())} of "
        f"{faults['badgr_calls']} calls: "
        f"{faults['badgr_faults']}), killed invocations {faults['kill_rate']:.0%} "
        f"({faults['killed_invocations']}), throttled AWS calls {faults['aws_rate']:.0%} "
        f"({faults['throttled_calls']}), seed {faults['seed']}"
    )
    rows = [
        ("badges final", f"{tally.final_pct:.2f} % ({tally.final} of {tally.badges})"),
        ("stuck or lost", tally.lost),
        ("recorded state contradicts Badgr", tally.contradictions),
        ("mislabelled", tally.mislabelled),
        ("duplicates in Badgr", tally.duplicates),
        (
            "dead-lettered",
            f"{tally.dead_lettered} badges, {tally.dlq_messages} messages in dead-letter queues",
        ),
        ("retries (redeliveries)", tally.retries),
        (
            "every learner invited exactly once",
            f"{tally.every_learner_invited_once} ({tally.invited_once} of {tally.learners})",
        ),
        ("wall time", f"{tally.wall_s:.0f} s"),
    ]
    for name, value in rows:
        print(f"  {name:<36} {value}")
    for example in tally.examples:
        print(f"  - {example}")
    print(json.dumps({k: v for k, v in asdict(tally).items() if k != "examples"}, sort_keys=True))


def passed(tally: Tally) -> bool:
    return (
        tally.final == tally.badges
        and tally.lost == tally.contradictions == tally.mislabelled == tally.duplicates == 0
        and tally.every_learner_invited_once
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = ChaosConfig()
    parser.add_argument(
        "--badgr", type=float, default=defaults.badgr_rate, help="share of Badgr calls failing"
    )
    parser.add_argument("--kills", type=float, default=defaults.kill_rate, help="share of invocations killed")
    parser.add_argument("--aws", type=float, default=defaults.aws_rate, help="share of AWS calls throttled")
    parser.add_argument("--learners", type=int, default=defaults.extra_learners, help="generated learners")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-demo", action="store_true", help="generated learners only")
    parser.add_argument("--workers", type=int, default=defaults.migrate_workers, help="migrate workers")
    args = parser.parse_args(argv)
    _quiet()
    logging.getLogger("backpack_migrate.local_stack").setLevel(logging.CRITICAL)
    config = ChaosConfig(
        badgr_rate=args.badgr,
        kill_rate=args.kills,
        aws_rate=args.aws,
        extra_learners=args.learners,
        demo_learners=not args.no_demo,
        seed=args.seed,
        migrate_workers=args.workers,
    )
    tally = run_chaos(Path(__file__).resolve().parents[2], config)
    print_tally(tally)
    return 0 if passed(tally) else 1


if __name__ == "__main__":
    sys.exit(main())
