"""Intake hands over before its Lambda time runs out and the next job goes on where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from backpack_migrate.domain import ExportStatus
from backpack_migrate.intake import (
    MAX_STALLS,
    RESERVE_MS,
    ChunkJob,
    IntakeJob,
    process_chunk,
    read_export,
    resume_intake,
)
from tests.fakes import fake_services
from tests.unit.badges import baked, hosted_assertion, make_export

pytestmark = pytest.mark.unit


def clock(calls_with_time: int) -> Callable[[], int]:
    """A remaining time that is plenty for so many readings, then short of the reserve."""
    readings = iter(range(calls_with_time))

    def remaining() -> int:
        return RESERVE_MS * 10 if next(readings, None) is not None else RESERVE_MS // 2

    return remaining


def test_an_intake_short_of_time_hands_over_and_every_learner_is_queued_once() -> None:
    emails = [f"learner{i:02d}@example.org" for i in range(11)]
    files = {
        email: {f"{email}-{n}.png": baked(hosted_assertion(f"{email}-{n}", email)) for n in range(2)}
        for email in emails
    }
    data = make_export(files)
    svc, store, queue, s3, _sender = fake_services()  # three learners per chunk
    etag = s3.put("exports-bucket", "exports/big.zip", data)

    export = read_export(svc, "exports-bucket", "exports/big.zip", etag, len(data), remaining_ms=clock(4))
    assert export.status == ExportStatus.READING
    handovers = [IntakeJob.model_validate(job) for job in queue.take("intake")]
    assert [(h.entries_done, h.chunks_done) for h in handovers] == [(4, 2)]
    chunks = [ChunkJob.model_validate(job) for job in queue.take("chunk")]

    # Each intake job gets a little time again, until the manifest is done.
    while handovers:
        (job,) = handovers
        export = resume_intake(svc, job, clock(3))
        handovers = [IntakeJob.model_validate(j) for j in queue.take("intake")]
        chunks += [ChunkJob.model_validate(j) for j in queue.take("chunk")]
        assert not handovers or handovers[0].entries_done > job.entries_done

    assert export.status == ExportStatus.CHUNKED
    stored = store.get_export(export.export_id)
    assert stored is not None and stored.status == ExportStatus.CHUNKED
    assert (stored.learner_count, stored.badge_count, stored.chunk_count) == (11, 22, len(chunks))
    assert sorted(c.chunk for c in chunks) == list(range(len(chunks)))
    queued = [learner.learner_id for chunk in chunks for learner in chunk.learners]
    assert sorted(queued) == sorted(svc.learner_id(email) for email in emails)  # each exactly once
    assert all(len(learner.files) == 2 for chunk in chunks for learner in chunk.learners)


def test_an_intake_job_delivered_again_after_the_export_is_read_queues_nothing() -> None:
    """At least once: SQS may deliver an intake job twice; once the export is read, it is done."""
    emails = [f"l{i}@example.org" for i in range(7)]
    data = make_export({e: {f"{e}.png": baked(hosted_assertion(e, e))} for e in emails})
    svc, _store, queue, s3, _sender = fake_services()
    etag = s3.put("exports-bucket", "exports/x.zip", data)
    read_export(svc, "exports-bucket", "exports/x.zip", etag, len(data), remaining_ms=clock(3))
    (job,) = [IntakeJob.model_validate(j) for j in queue.take("intake")]
    queue.take("chunk")
    resume_intake(svc, job, clock(100))
    first = queue.take("chunk")
    resume_intake(svc, job, clock(100))  # the export is read now: nothing more
    assert queue.take("chunk") == [] and first


def _throttled() -> Exception:
    from botocore.exceptions import ClientError

    error = {"Code": "ProvisionedThroughputExceededException", "Message": "Rate exceeded"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, "BatchWriteItem")


def _chunked_world(learners: int) -> tuple[Any, Any, Any, list[ChunkJob], list[str]]:
    emails = [f"learner{i:02d}@example.org" for i in range(learners)]
    files = {
        email: {f"{email}-{n}.png": baked(hosted_assertion(f"{email}-{n}", email)) for n in range(2)}
        for email in emails
    }
    data = make_export(files)
    svc, store, queue, s3, _sender = fake_services()
    etag = s3.put("exports-bucket", "exports/x.zip", data)
    read_export(svc, "exports-bucket", "exports/x.zip", etag, len(data))
    chunks = [ChunkJob.model_validate(job) for job in queue.take("chunk")]
    return svc, store, queue, chunks, emails


def test_a_chunk_whose_writes_aws_refuses_now_and_then_goes_on_in_new_jobs_and_records_everyone() -> None:
    svc, store, queue, chunks, emails = _chunked_world(7)
    write = store.put_badges_if_absent
    calls = {"n": 0}

    def every_other_write_throttled(badges: Any) -> int:
        calls["n"] += 1
        if calls["n"] % 2:
            raise _throttled()  # after the SDK's own retries
        return write(badges)

    store.put_badges_if_absent = every_other_write_throttled
    jobs, rounds = list(chunks), 0
    while jobs:
        rounds += 1
        assert rounds < 100
        for job in jobs:
            process_chunk(svc, job, lambda: RESERVE_MS * 10)  # never raises: it hands over
        jobs = [ChunkJob.model_validate(j) for j in queue.take("chunk")]
    ids = sorted(svc.learner_id(email) for email in emails)
    assert sorted({b.learner_id for b in store.badges.values()}) == ids
    assert len(store.badges) == 2 * len(emails)
    assert sorted({job["learner_id"] for job in queue.take("verify")}) == ids


def test_a_chunk_that_aws_keeps_refusing_fails_as_usual_after_its_stalls_and_other_errors_at_once() -> None:
    svc, store, queue, chunks, _emails = _chunked_world(2)

    def always_throttled(badges: Any) -> int:
        raise _throttled()

    store.put_badges_if_absent = always_throttled
    job = chunks[0]
    for _ in range(MAX_STALLS):
        assert process_chunk(svc, job, lambda: RESERVE_MS * 10) is not None
        (next_job,) = queue.take("chunk")
        job = ChunkJob.model_validate(next_job)
    with pytest.raises(ClientError):
        process_chunk(svc, job, lambda: RESERVE_MS * 10)  # SQS's retries and dead-letter queue take over

    def broken(badges: Any) -> int:
        raise ValueError("not a throttle")

    store.put_badges_if_absent = broken
    with pytest.raises(ValueError):
        process_chunk(svc, chunks[0], lambda: RESERVE_MS * 10)
    assert queue.take("chunk") == []
