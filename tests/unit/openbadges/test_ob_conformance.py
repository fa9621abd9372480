"""The 38 corpus scenarios: our verdict must match the expected one, even where the reference errs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ob_helpers import CORPUS

from backpack_migrate.openbadges import MapFetcher, Verifier

pytestmark = pytest.mark.unit


def _scenarios() -> list[Any]:
    path = CORPUS / "scenarios.json"
    if not path.is_file():
        return [pytest.param(None, id="corpus-absent")]
    data = json.loads(path.read_text(encoding="utf-8"))
    return [pytest.param(s, id=s["name"].strip()) for s in data["scenarios"]]


def _fetcher(corpus: Path, scenario: dict[str, Any]) -> MapFetcher:
    data = json.loads((corpus / "scenarios.json").read_text(encoding="utf-8"))
    mapping: dict[str, tuple[int, bytes, str]] = {}
    for url, entry in {**data["always_serve"], **scenario["serve"]}.items():
        mapping[url] = (
            int(entry.get("status", 200)),
            (corpus / entry["file"]).read_bytes(),
            "application/json",
        )
    fallback = data["image_fallback"]
    pattern = re.compile(fallback["applies_to_urls_matching"])
    image = (corpus / fallback["file"]).read_bytes()
    unknown_status = int(data["unknown_url"]["status"])

    def answer(url: str) -> tuple[int, bytes, str] | None:
        if pattern.search(url):
            return (200, image, "image/png")
        return (unknown_status, b"Not Found", "text/plain")

    return MapFetcher(mapping, fallback=answer)


def _source(corpus: Path, given: dict[str, str]) -> bytes | str:
    if "url" in given:
        return given["url"]
    if "file" in given:
        return (corpus / given["file"]).read_bytes()
    return (corpus / given["text_file"]).read_text(encoding="utf-8")


@pytest.mark.parametrize("scenario", _scenarios())
def test_scenario_verdict(corpus: Path, scenario: dict[str, Any] | None) -> None:
    assert scenario is not None
    recipients = [scenario["recipient"]["email"]] if scenario.get("recipient") else []
    # The real clock: several fixtures expired years ago and must be reported expired.
    verdict = Verifier(_fetcher(corpus, scenario)).verify(_source(corpus, scenario["input"]), recipients)
    expected_valid = scenario["expected"] == "valid"
    assert scenario["expected"] == "valid" or scenario["expected"].startswith("invalid")
    assert verdict.valid is expected_valid, (scenario["expected_note"], verdict.errors)
    if not verdict.valid:
        assert verdict.errors
        for issue in verdict.errors:
            assert re.fullmatch(r"[A-Z][A-Z0-9_]+", issue.code)
            assert issue.message.endswith(".")


def test_reference_disagreements_follow_our_expectation(corpus: Path) -> None:
    data = json.loads((corpus / "scenarios.json").read_text(encoding="utf-8"))
    disagreements = [
        s
        for s in data["scenarios"]
        if (s["expected"] == "valid") != (s["reference_openbadges_1_1_2"] == "valid")
    ]
    assert len(disagreements) == 2
    for scenario in disagreements:
        verdict = Verifier(_fetcher(corpus, scenario)).verify(_source(corpus, scenario["input"]))
        assert verdict.valid is (scenario["expected"] == "valid"), scenario["name"]


def test_single_entry_revocation_list_revokes(corpus: Path) -> None:
    data = json.loads((corpus / "scenarios.json").read_text(encoding="utf-8"))
    scenario = next(s for s in data["scenarios"] if "1-entry" in s["name"])
    verdict = Verifier(_fetcher(corpus, scenario)).verify(_source(corpus, scenario["input"]))
    assert verdict.revoked
    assert [e.code for e in verdict.errors] == ["REVOKED"]
    assert "A good reason" in verdict.errors[0].message
    assert verdict.certain_to_fail


def test_extract_reads_every_baked_corpus_image_offline(corpus: Path) -> None:
    from backpack_migrate.openbadges import UnbakeError, extract

    expected_kinds = {
        "validator-core/baked_heart_v2.png": "json",
        "validator-core-signed/baked_signed_valid_2.0.png": "jws",
        "validator-core-signed/baked_signed_valid_2.0.svg": "jws",
        "badgr-server/baked_image.png": "json",
        "backpack/valid-baked.png": "url",
        "backpack/404.png": "url",
        "bakery-py/baked_example.svg": "json",
        "bakery-js/baked.svg": "json",
        "salava/invalid-metadata.png": "url",
    }
    for name, kind in expected_kinds.items():
        extracted = extract((corpus / name).read_bytes())
        assert extracted.payload_kind == kind, name
    unreadable = {
        "bakery-py/unbaked_example.svg": "NOTHING_BAKED",
        "bakery-js/unbaked.svg": "NOTHING_BAKED",
        "bakery-js/unbaked.png": "NOTHING_BAKED",
        "backpack/unbaked.png": "NOTHING_BAKED",
        "backpack/no-badge-data.png": "NOTHING_BAKED",
        "backpack/huge.png": "NOTHING_BAKED",
        "backpack/sneaky-badge.png": "NOT_AN_IMAGE",
        "badgr-server/unbaked_image.png": "NOTHING_BAKED",
        "badgr-server/bad_image.png": "NOT_AN_IMAGE",
        "salava/no-metadata.png": "NOTHING_BAKED",
        "salava/not-an-image.txt": "NOT_AN_IMAGE",
        "validator-core/public_domain_heart.png": "NOTHING_BAKED",
        "bakery-js/bad-json.svg": "BAKED_DATA_UNREADABLE",
    }
    for name, code in unreadable.items():
        with pytest.raises(UnbakeError) as info:
            extract((corpus / name).read_bytes())
        assert info.value.code == code, name
    # An empty CDATA falls back to the verify attribute (a URL here).
    assert extract((corpus / "bakery-js/no-json.svg").read_bytes()).payload_kind == "url"


def test_extract_offline_facts(corpus: Path) -> None:
    from backpack_migrate.openbadges import extract

    extracted = extract((corpus / "validator-core/baked_heart_v2.png").read_bytes())
    assert extracted.version == "2.0"
    assert extracted.hosted_url == "https://example.org/beths-robotics-badge.json"
    assert extracted.issued_on is not None and extracted.issued_on.year == 2016
    signed = extract((corpus / "validator-core-signed/baked_signed_valid_2.0.png").read_bytes())
    assert signed.jws and signed.assertion and signed.assertion["type"] == "Assertion"
    assert signed.hosted_url is None
