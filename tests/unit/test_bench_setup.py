"""The benchmark's set-up needs nothing beside the project: the reference gets its JSON-LD contexts
from the project's own copies, and the corpus part skips with a message when the corpus is absent.
(The benchmark itself runs under ``make bench``, never in tests.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.bench import reference_runner, verify_bench
from infra.bench.corpus import PROJECT_ROOT, context_iris, load_corpus
from infra.bench.loopback_site import HostedBadge, generate_site

pytestmark = pytest.mark.unit


@pytest.fixture
def no_shared(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As on a fresh clone: no ../shared beside the project."""
    monkeypatch.setenv("OB_CORPUS_DIR", str(tmp_path / "no-such-corpus"))


def test_the_reference_job_finds_its_contexts_in_the_project(no_shared: None) -> None:
    hosted = [
        HostedBadge(url=f"http://127.0.0.1:9/assertions/{i}", email="l@example.net", issuer=0)
        for i in range(3)
    ]
    job = verify_bench.loopback_reference_job("http://127.0.0.1:9", hosted, picked=[1, 2])
    contexts = job["contexts"]
    assert verify_bench.OB2_CONTEXT in contexts
    for url, spec in contexts.items():
        path = Path(spec["file"])
        assert path.is_file(), url
        assert path.resolve().is_relative_to(PROJECT_ROOT), f"{url} is served from outside the project"
        document = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(document["@context"], dict | list), url
    assert [item["input"]["url"] for item in job["items"]] == [hosted[1].url, hosted[2].url]
    assert job["warmup_items"][0]["input"]["url"] == hosted[0].url  # warmed on a badge not timed


def test_the_v2_context_defines_every_term_of_the_loopback_badges(no_shared: None) -> None:
    spec = verify_bench.bundled_contexts()[verify_bench.OB2_CONTEXT]
    terms = set(json.loads(Path(spec["file"]).read_text(encoding="utf-8"))["@context"])
    used = {"id", "type", "recipient", "identity", "hashed", "salt", "badge", "issuedOn", "verification",
            "name", "description", "image", "criteria", "narrative", "issuer", "url", "email",
            "Assertion", "BadgeClass", "Issuer", "hosted", "HostedBadge", "revocationList",
            "publicKey"}  # fmt: skip
    assert used <= terms, used - terms


def test_the_corpus_part_skips_with_a_message_without_the_corpus(no_shared: None) -> None:
    assert load_corpus() is None
    part = verify_bench.bench_corpus(rounds=1)
    assert part.skipped and "corpus" in part.skipped
    assert part.figures == {"verify_corpus_ours_per_s": None, "verify_corpus_reference_per_s": None}


# The published Open Badges contexts (an unpublished draft's context is answered 404, as on the web).
SPEC_CONTEXTS = ("https://w3id.org/openbadges", "https://openbadgespec.org/")


class _Request:
    def __init__(self, url: str) -> None:
        self.url = url


def _unresolved(server: reference_runner.Server, named: set[str]) -> dict[str, str]:
    """What the reference run's loader fails to answer among ``named`` and the contexts they
    import by IRI (the 1.0 context imports legacy-v1), offline: {url: why}."""
    problems: dict[str, str] = {}
    todo, seen = sorted(named), set()
    while todo:
        url = todo.pop()
        if url in seen or not url.startswith(SPEC_CONTEXTS):
            continue
        seen.add(url)
        status, _headers, body = server.answer(_Request(url))
        try:
            document = json.loads(body) if status == 200 else None
        except ValueError:
            document = None
        if not isinstance(document, dict) or "@context" not in document:
            problems[url] = f"answered {status} without a JSON-LD context"
            continue
        todo.extend(context_iris(document))
    return problems


def test_the_loopback_run_resolves_every_context_its_badges_name_offline(
    no_shared: None, tmp_path: Path
) -> None:
    base = "http://127.0.0.1:9"
    hosted = generate_site(tmp_path, base, badges=4, issuers=2, learners=2)
    named = {url for path in tmp_path.rglob("*.json") for url in context_iris(json.loads(path.read_text()))}
    assert named == {verify_bench.OB2_CONTEXT}
    named |= set(verify_bench.REFERENCE_NAMES_FOR_EVERY_BADGE)
    server = reference_runner.Server(verify_bench.loopback_reference_job(base, hosted, picked=[1, 2]))
    assert _unresolved(server, named) == {}


def test_the_corpus_run_resolves_every_context_its_scenarios_name_offline() -> None:
    corpus = load_corpus()
    if corpus is None:
        pytest.skip("the conformance corpus (../shared/ob-corpus beside the project) is absent")
    server = reference_runner.Server(corpus.reference_job())
    own = {*verify_bench.REFERENCE_NAMES_FOR_EVERY_BADGE, *verify_bench.REFERENCE_NAMES_FOR_OLD_BADGES}
    named_by_corpus: set[str] = set()
    for scenario in corpus.scenarios:
        named = {url for document in corpus.documents_for(scenario) for url in context_iris(document)}
        named_by_corpus |= named
        server.set_item(corpus.reference_item(scenario))
        assert _unresolved(server, named | own) == {}, scenario.name
    assert verify_bench.OB2_CONTEXT in named_by_corpus


def test_the_older_badges_contexts_resolve_offline_from_the_project(no_shared: None) -> None:
    """The 1.0 context the reference gives upgraded 0.5 and 1.0 badges, and the legacy-v1
    context it imports by IRI, come from the project's copies."""
    hosted = [
        HostedBadge(url=f"http://127.0.0.1:9/assertions/{i}", email="l@example.net", issuer=0)
        for i in range(2)
    ]
    server = reference_runner.Server(verify_bench.loopback_reference_job("http://127.0.0.1:9", hosted, [1]))
    named = {*verify_bench.REFERENCE_NAMES_FOR_EVERY_BADGE, *verify_bench.REFERENCE_NAMES_FOR_OLD_BADGES}
    assert _unresolved(server, named) == {}
    assert verify_bench.OB1_LEGACY_CONTEXT in verify_bench.BUNDLED_CONTEXTS


# The corpus's copies of the published contexts, by the address each is published at.
RECIPIENT_PROFILE_CONTEXT = "https://openbadgespec.org/extensions/recipientProfile/context.json"
CORPUS_COPIES = {
    verify_bench.OB2_CONTEXT: "ims-spec/v2_context.json",
    RECIPIENT_PROFILE_CONTEXT: "ims-spec/ext_recipientProfile_context.json",
    verify_bench.OB1_CONTEXT: "ims-spec/v1_context.json",
    verify_bench.OB1_LEGACY_CONTEXT: "ims-spec/v1_legacy_context.json",
}


def test_the_project_copies_say_what_the_published_contexts_say() -> None:
    corpus = load_corpus()
    if corpus is None:
        pytest.skip("the conformance corpus (../shared/ob-corpus beside the project) is absent")
    for url, name in verify_bench.BUNDLED_CONTEXTS.items():
        ours = json.loads((verify_bench.CONTEXTS_DIR / name).read_text(encoding="utf-8"))
        published = json.loads((corpus.root / CORPUS_COPIES[url]).read_text(encoding="utf-8"))
        assert ours == published, url


def test_the_worker_timing_counts_only_calls_made_inside_a_migrate_batch() -> None:
    import threading

    import botocore.client

    from infra.bench.worker_time import WORKER_PREFIX, timing_migrate_workers
    from infra.local.sqs_poller import SqsPollers

    original = botocore.client.BaseClient._make_api_call
    calls: list[str] = []

    def batch(self: object, source: object, messages: object) -> None:
        botocore.client.BaseClient._make_api_call(None, "GetItem", {})  # type: ignore[arg-type]

    def worker(poll_first: bool) -> None:
        if poll_first:  # a long poll for the next batch is not a badge's time
            botocore.client.BaseClient._make_api_call(None, "ReceiveMessage", {})  # type: ignore[arg-type]
        SqsPollers._process_batch(None, None, [])  # type: ignore[arg-type]

    def fake_call(client: object, operation: str, params: object) -> None:
        calls.append(operation)

    saved = SqsPollers._process_batch
    SqsPollers._process_batch = batch  # type: ignore[method-assign,assignment]
    botocore.client.BaseClient._make_api_call = fake_call  # type: ignore[method-assign,assignment]
    try:
        with timing_migrate_workers() as spent:
            for name in (f"{WORKER_PREFIX}0", "local-sqs-VerifyQueue-0"):
                thread = threading.Thread(target=worker, args=(True,), name=name)
                thread.start()
                thread.join()
    finally:
        SqsPollers._process_batch = saved  # type: ignore[method-assign]
        botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]
    assert calls == ["ReceiveMessage", "GetItem", "ReceiveMessage", "GetItem"]  # every call went through
    assert dict(spent.aws_calls) == {"GetItem": 1}  # only the migrate worker's, inside its batch
    assert spent.busy_s > 0
    assert "80 % of the ideal leaves 375 ms" in spent.summary(1, 375)
