"""Hostile input to the old APIs fails cleanly: callback names, bearer values, access requests."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backpack_migrate import connect
from backpack_migrate.legacy_http import Reply, json_reply, valid_callback, with_jsonp
from tests.fakes import fake_services

pytestmark = pytest.mark.unit


@given(st.text(max_size=80))
def test_a_jsonp_callback_is_a_plain_name_or_refused(name: str) -> None:
    reply = with_jsonp(json_reply(404, {"status": "missing"}), name)
    if not name:
        assert reply.status == 404
    elif valid_callback(name):
        assert reply.status == 200 and isinstance(reply.body, str) and reply.body.startswith(f"/**/{name}(")
        assert all(c.isalnum() or c in "_$." for c in name)
    else:
        # The fixed refusal, never the name echoed into a script.
        refusal = '{"status":"invalid","error":"invalid `callback` parameter"}'
        assert (reply.status, reply.body) == (400, refusal)


@given(
    st.one_of(
        st.none(),
        st.text(max_size=200),
        st.binary(max_size=120).map(lambda b: "Bearer " + base64.b64encode(b).decode()),
    )
)
def test_any_authorization_header_gets_a_401_and_never_a_lookup_when_malformed(header: str | None) -> None:
    svc, store, *_ = fake_services()
    looked_up: list[str] = []
    store.grant_for_access_digest = looked_up.append  # type: ignore[method-assign,assignment]
    answer = connect.authenticate(svc, header, "https://site.example", "issue")
    assert isinstance(answer, Reply) and answer.status == 401
    scheme, _, value = (header or "").partition(" ")
    try:
        token = base64.b64decode(value.strip(), validate=True).decode("ascii")
    except ValueError:
        token = ""
    if not (scheme.lower() == "bearer" and connect.plausible_token(token)):
        assert looked_up == []


@given(st.text(max_size=300), st.text(max_size=60))
def test_an_access_request_is_checked_or_refused_as_text(callback: str, scope: str) -> None:
    checked = connect.check_access_request(callback or None, scope or None)
    if isinstance(checked, Reply):
        assert checked.status == 400 and checked.content_type.startswith("text/plain")
    else:
        assert checked.callback.startswith(("http://", "https://")) and checked.permissions == ["issue"]
