from __future__ import annotations

import string
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backpack_migrate.crypto import EmailCipher, TokenVault, badge_id_for, learner_id_for
from backpack_migrate.links import LinkError, sign_link, tokens_match, verify_link
from tests.fakes import FakeKms

pytestmark = pytest.mark.unit
SECRET = b"s" * 32


def test_a_signed_link_names_its_learner_and_export() -> None:
    token = sign_link(SECRET, "learner1", "export1", ttl_seconds=60, now=1000)
    claims = verify_link(SECRET, token, now=1030)
    assert (claims.learner_id, claims.export_id, claims.expires_at) == ("learner1", "export1", 1060)


def test_an_expired_link_is_refused_as_expired() -> None:
    token = sign_link(SECRET, "learner1", "export1", ttl_seconds=60, now=1000)
    with pytest.raises(LinkError) as raised:
        verify_link(SECRET, token, now=1061)
    assert raised.value.code == "LINK_EXPIRED"


def test_a_link_signed_with_another_key_is_forged() -> None:
    token = sign_link(b"other" * 8, "learner1", "export1", ttl_seconds=60)
    with pytest.raises(LinkError) as raised:
        verify_link(SECRET, token)
    assert raised.value.code == "LINK_FORGED"


def test_a_link_signed_before_a_key_rotation_still_opens_and_only_then_is_the_old_key_read() -> None:
    old_key = b"o" * 32
    asked: list[str] = []

    def others() -> Iterator[bytes]:
        asked.append("previous")
        yield old_key
        asked.append("refreshed")
        yield b"r" * 32

    current = sign_link(SECRET, "learner1", "export1", ttl_seconds=60)
    assert verify_link(SECRET, current, other_secrets=others).learner_id == "learner1"
    assert asked == []
    before_rotation = sign_link(old_key, "learner1", "export1", ttl_seconds=60)
    assert verify_link(SECRET, before_rotation, other_secrets=others).learner_id == "learner1"
    assert asked == ["previous"]  # read only as far as needed
    with pytest.raises(LinkError) as raised:
        verify_link(SECRET, before_rotation)  # no other key: never rotated
    assert raised.value.code == "LINK_FORGED"
    asked.clear()
    with pytest.raises(LinkError) as raised:
        verify_link(SECRET, sign_link(b"x" * 32, "learner1", "export1", 60), other_secrets=others)
    assert raised.value.code == "LINK_FORGED" and asked == ["previous", "refreshed"]


def test_changing_the_learner_in_a_link_breaks_its_signature() -> None:
    token = sign_link(SECRET, "learner1", "export1", ttl_seconds=60)
    other = sign_link(SECRET, "learner2", "export1", ttl_seconds=60)
    spliced = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(LinkError) as raised:
        verify_link(SECRET, spliced)
    assert raised.value.code == "LINK_FORGED"


@given(st.text(alphabet=string.printable, max_size=600))
def test_any_text_is_refused_cleanly_as_a_link(text: str) -> None:
    with pytest.raises(LinkError):
        verify_link(SECRET, text)


def test_learner_ids_are_stable_across_case_and_spaces_and_hide_the_email() -> None:
    first = learner_id_for(" Ana@Example.org ", SECRET)
    assert first == learner_id_for("ana@example.org", SECRET)
    assert "ana" not in first
    assert first != learner_id_for("ana@example.org", b"another secret")
    assert badge_id_for(first, "export1", "a.png") != badge_id_for(first, "export1", "b.png")
    # The same file name in another export is another badge.
    assert badge_id_for(first, "export1", "a.png") != badge_id_for(first, "export2", "a.png")


def test_emails_are_sealed_per_learner_under_one_data_key_per_export() -> None:
    kms = FakeKms()
    cipher = EmailCipher(kms, "key")
    data_key = cipher.new_data_key("export1")
    sealed = [
        cipher.encrypt(
            f"learner{i}@example.org", learner_id=f"l{i}", export_id="export1", data_key_ciphertext=data_key
        )
        for i in range(50)
    ]
    assert kms.calls == 1
    assert all("example.org" not in s for s in sealed)
    assert (
        cipher.decrypt(sealed[7], learner_id="l7", export_id="export1", data_key_ciphertext=data_key)
        == "learner7@example.org"
    )
    with pytest.raises(Exception):  # noqa: B017 - AES-GCM refuses another learner's ciphertext
        cipher.decrypt(sealed[7], learner_id="l8", export_id="export1", data_key_ciphertext=data_key)


def test_a_fresh_process_decrypts_with_the_stored_data_key() -> None:
    kms = FakeKms()
    data_key = EmailCipher(kms, "key").new_data_key("e")
    sealed = EmailCipher(kms, "key").encrypt(
        "a@b.org", learner_id="l", export_id="e", data_key_ciphertext=data_key
    )
    assert EmailCipher(kms, "key").decrypt(
        sealed, learner_id="l", export_id="e", data_key_ciphertext=data_key
    ) == ("a@b.org")


def test_tokens_are_bound_to_their_learner() -> None:
    vault = TokenVault(FakeKms(), "key")
    sealed = vault.seal('{"access_token": "t"}', learner_id="l1")
    assert vault.open(sealed, learner_id="l1") == '{"access_token": "t"}'
    with pytest.raises(Exception):  # noqa: B017
        vault.open(sealed, learner_id="l2")


def test_tokens_match_needs_both_and_equal() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match(None, "abc")
    assert not tokens_match("abc", "")
