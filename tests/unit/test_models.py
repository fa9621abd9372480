"""The models' deferred build: nothing is built at import, and a first use from many threads at once
builds each model once and validates every input as a built model would."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from pydantic import Field, ValidationError

from backpack_migrate.domain import BadgeRecord, BadgeState, MemberLocation
from backpack_migrate.models import Model, build_now

pytestmark = pytest.mark.unit


def _fresh_models(completed: list[str] | None = None) -> tuple[type[Model], type[Model]]:
    class Part(Model):
        name: str
        size: int = Field(ge=0)

    class Whole(Model):
        parts: list[Part]
        label: str | None = None

        @classmethod
        def __pydantic_on_complete__(cls) -> None:  # pydantic calls it once a build completes
            if completed is not None:
                completed.append(cls.__name__)

    return Part, Whole


def test_a_model_is_built_on_first_use_not_when_defined() -> None:
    part, whole = _fresh_models()
    assert not part.__pydantic_complete__ and not whole.__pydantic_complete__
    assert whole.model_validate({"parts": [{"name": "a", "size": 1}]}).model_dump() == {
        "parts": [{"name": "a", "size": 1}],
        "label": None,
    }
    assert whole.__pydantic_complete__


def test_build_now_builds_what_it_is_given_and_nothing_else() -> None:
    part, whole = _fresh_models()
    build_now(part)
    assert part.__pydantic_complete__ and not whole.__pydantic_complete__


def test_many_threads_using_a_model_first_at_once_build_it_once_and_validate_alike() -> None:
    completed: list[str] = []
    _, whole = _fresh_models(completed)
    start = threading.Barrier(16)

    def first_use(n: int) -> object:
        start.wait()
        if n % 2:
            with pytest.raises(ValidationError):
                whole.model_validate({"parts": [{"name": "x", "size": -1}]})
            return "refused"
        return whole.model_validate({"parts": [{"name": f"p{n}", "size": n}]}).model_dump()

    # Threads switch every few microseconds rather than milliseconds, so a build is interrupted.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(first_use, range(16)))
    finally:
        sys.setswitchinterval(interval)

    assert completed == ["Whole"]
    for n, answer in enumerate(answers):
        assert answer == ("refused" if n % 2 else {"parts": [{"name": f"p{n}", "size": n}], "label": None})


def test_a_record_with_a_model_inside_validates_and_round_trips() -> None:
    member = MemberLocation(name="a.png", header_offset=0, compressed_size=3, size=3, method=0)
    badge = BadgeRecord(
        learner_id="l",
        badge_id="b",
        export_id="e",
        file_name="a.png",
        member=member,
        state=BadgeState.EXTRACTED,
    )
    assert BadgeRecord.model_validate(badge.model_dump()) == badge
    with pytest.raises(ValidationError):
        MemberLocation(name="a.png", header_offset=-1, compressed_size=3, size=3, method=0)
