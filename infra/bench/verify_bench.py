"""Badges verified per second: our verifier against IMS's reference validator, on the same inputs.

(a) the corpus scenarios, served offline (ours: ``MapFetcher``; reference: ``responses``);
(b) a generated export of hosted 2.0 badges on a loopback site with added latency per request
    (ours: ``SafeFetcher(allow_loopback=True)`` and ``verify_many`` over every badge; the
    reference, far slower, on a fixed random sample of the same badges, one at a time as
    Badgr calls it).

``python -m infra.bench.verify_bench [--badges N --sample K --workers W]`` runs both parts.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.bench import reference
from infra.bench.common import Part, per_second, render
from infra.bench.corpus import Corpus, load_corpus, verdict
from infra.bench.loopback_site import STATS_PATH, HostedBadge, LoopbackSite, generate_site

OB2_CONTEXT = "https://w3id.org/openbadges/v2"


def load_ours() -> tuple[Any, Any, Any] | str:
    """(Verifier, MapFetcher, SafeFetcher), or why they cannot be imported yet."""
    try:
        from backpack_migrate.openbadges import MapFetcher, SafeFetcher, Verifier
    except ImportError as exc:
        return f"our verifier is not importable yet ({exc})"
    return Verifier, MapFetcher, SafeFetcher


def prepare_reference(log: Callable[[str], None] = print) -> str | None:
    """Builds the reference environment if needed; returns why it is unavailable, or None."""
    try:
        reference.ensure_reference(log=log)
    except reference.ReferenceSetupError as exc:
        return f"the reference validator could not be installed: {exc}"
    return None


def _codes(result: Any) -> str:
    errors = getattr(result, "errors", None) or []
    return ",".join(str(getattr(e, "code", e)) for e in errors[:3])


# -- (a) corpus ---------------------------------------------------------------------------------
def bench_corpus(rounds: int = 5, reference_error: str | None = None) -> Part:
    part = Part(
        "verify (a): corpus scenarios served offline",
        headers=["scenario", "expected", "ours", "ours ms", "reference", "ref ms"],
        figures={"verify_corpus_ours_per_s": None, "verify_corpus_reference_per_s": None},
    )
    corpus = load_corpus()
    if corpus is None:
        return part.skip("the conformance corpus (../shared/ob-corpus beside the project) is absent")
    n = len(corpus.scenarios)
    ours_verdicts, ours_ms, ours_note = _corpus_ours(corpus, rounds)
    ref_verdicts: list[str] = []
    ref_ms: list[float] = []
    ref_note = reference_error
    if ref_note is None:
        try:
            out = reference.run_reference(corpus.reference_job(rounds=rounds))
        except reference.ReferenceSetupError as exc:
            ref_note = str(exc)
        else:
            results = out["results"]
            ref_verdicts = [verdict(r["valid"]) for r in results[:n]]
            ref_ms = [
                sum(results[k * n + i]["seconds"] for k in range(rounds)) * 1000 / rounds for i in range(n)
            ]
            part.figures["verify_corpus_reference_per_s"] = per_second(len(results), out["verify_s"])
            recorded = sum(
                v == s.reference_recorded for v, s in zip(ref_verdicts, corpus.scenarios, strict=True)
            )
            part.notes.append(
                f"reference: openbadges {out.get('openbadges')} on Python {out.get('python')}, "
                f"import {out['import_s']:.2f} s; reproduces the corpus's recorded reference verdict "
                f"on {recorded}/{n} scenarios"
            )
    for i, scenario in enumerate(corpus.scenarios):
        part.rows.append(
            [
                scenario.name[:58],
                scenario.expected,
                ours_verdicts[i] if ours_verdicts else "-",
                f"{ours_ms[i]:.2f}" if ours_ms else "-",
                ref_verdicts[i] if ref_verdicts else "-",
                f"{ref_ms[i]:.2f}" if ref_ms else "-",
            ]
        )
    if ours_verdicts:
        agree = sum(v == s.expected for v, s in zip(ours_verdicts, corpus.scenarios, strict=True))
        part.figures["verify_corpus_ours_agreement"] = f"{agree}/{n}"
        part.figures["verify_corpus_ours_per_s"] = per_second(n, sum(ours_ms) / 1000)
        part.notes.append(f"ours agrees with the expected verdict on {agree}/{n} scenarios")
        wrong = [s.name for v, s in zip(ours_verdicts, corpus.scenarios, strict=True) if v != s.expected]
        if wrong:
            part.notes.append("ours disagrees on: " + "; ".join(wrong))
    else:
        part.notes.append(f"ours: not run: {ours_note}")
    if ref_verdicts:
        agree = sum(v == s.expected for v, s in zip(ref_verdicts, corpus.scenarios, strict=True))
        part.figures["verify_corpus_reference_agreement"] = f"{agree}/{n}"
        part.notes.append(f"reference agrees with the expected verdict on {agree}/{n} scenarios")
    else:
        part.notes.append(f"reference: not run: {ref_note}")
    part.notes.append(
        f"{n} scenarios x {rounds} rounds per side; times are verify calls only (mean per scenario), "
        "fixtures served from memory with no latency"
    )
    ours_rate = part.figures["verify_corpus_ours_per_s"]
    ref_rate = part.figures["verify_corpus_reference_per_s"]
    part.notes.append(f"throughput: ours {ours_rate} badges/s, reference {ref_rate} badges/s")
    return part


def _corpus_ours(corpus: Corpus, rounds: int) -> tuple[list[str], list[float], str | None]:
    ours = load_ours()
    if isinstance(ours, str):
        return [], [], ours
    verifier_cls, map_fetcher_cls, _ = ours
    pattern = corpus.image_pattern
    image = corpus.image_file.read_bytes()
    unknown = corpus.unknown_status

    def fallback(url: str) -> tuple[int, bytes, str] | None:
        import re

        if re.search(pattern, url):
            return (200, image, "image/png")
        return (unknown, b"Not Found", "text/plain")

    prepared = [(s, corpus.mapping_for(s), corpus.source_for(s)) for s in corpus.scenarios]
    totals = [0.0] * len(prepared)
    verdicts: list[str] = []
    try:
        warm = verifier_cls(map_fetcher_cls(prepared[0][1], fallback))
        warm.verify(prepared[0][2], prepared[0][0].recipients())
        for round_no in range(rounds):
            for i, (scenario, mapping, source) in enumerate(prepared):
                verifier = verifier_cls(map_fetcher_cls(mapping, fallback))
                started = time.perf_counter()
                result = verifier.verify(source, scenario.recipients())
                totals[i] += time.perf_counter() - started
                if round_no == 0:
                    verdicts.append(verdict(bool(result.valid)))
    except Exception as exc:
        return [], [], f"our verifier failed: {type(exc).__name__}: {exc}"
    return verdicts, [t * 1000 / rounds for t in totals], None


# -- (b) loopback --------------------------------------------------------------------------------
CONTEXTS_DIR = Path(__file__).resolve().parent / "contexts"
OB1_CONTEXT = "https://w3id.org/openbadges/v1"
OB1_LEGACY_CONTEXT = "https://w3id.org/openbadges/legacy-v1"  # imported by the 1.0 context by IRI
# The four Open Badges JSON-LD context documents, as published at these addresses (public spec
# data), shipped so the loopback run needs nothing beside the project. Its hosted 2.0 badges need
# the first two; the 1.0 context (and legacy-v1, which it imports) is what the reference gives
# the 0.5 and 1.0 badges it upgrades, so any older badge a run hosts resolves offline too.
BUNDLED_CONTEXTS = {
    OB2_CONTEXT: "v2.jsonld",
    "https://openbadgespec.org/extensions/recipientProfile/context.json": "recipient-profile.jsonld",
    OB1_CONTEXT: "v1.jsonld",
    OB1_LEGACY_CONTEXT: "legacy-v1.jsonld",
}


# Contexts the reference names by itself, whatever the badge names: it compacts every document
# (and the recipient profile it is given) against the 2.0 context, and upgrades 0.5 and 1.0
# badges by giving them the 1.0 context (openbadges-validator-core: verifier.py,
# tasks/object_upgrades.py).
REFERENCE_NAMES_FOR_EVERY_BADGE = (OB2_CONTEXT,)
REFERENCE_NAMES_FOR_OLD_BADGES = (OB1_CONTEXT,)


def bundled_contexts() -> dict[str, dict[str, str]]:
    """The reference's context map for the loopback run, from the project's own copies."""
    return {
        url: {"file": str(CONTEXTS_DIR / name), "content_type": "application/ld+json"}
        for url, name in BUNDLED_CONTEXTS.items()
    }


def loopback_reference_job(base_url: str, hosted: list[HostedBadge], picked: list[int]) -> dict[str, Any]:
    """The reference's job for (b): real HTTP to the loopback site, the contexts served locally."""
    picked_set = set(picked)
    warm = next(i for i in range(len(hosted)) if i not in picked_set)
    return {
        "mode": "passthrough",
        "passthrough": [base_url + "/"],
        "contexts": bundled_contexts(),
        "warmup_items": [{"name": "warmup", "input": {"url": hosted[warm].url}}],
        "stats_url": base_url + STATS_PATH,
        "items": [{"name": str(i), "input": {"url": hosted[i].url}} for i in picked],
    }


def bench_loopback(
    badges: int = 10_000,
    issuers: int = 200,
    sample: int = 250,
    workers: int = 16,
    latency: float = 0.02,
    seed: int = 7,
    reference_error: str | None = None,
    sequential_sample: bool = True,
) -> Part:
    part = Part(
        f"verify (b): {badges} hosted 2.0 badges, {issuers} issuers, "
        f"loopback +{latency * 1000:.0f} ms/request",
        headers=["verifier", "badges", "valid", "seconds", "badges/s", "HTTP requests", "req/badge"],
        figures={
            "verify_loopback_ours_per_s": None,
            "verify_loopback_reference_per_s": None,
            "verify_loopback_ratio": None,
            "verify_loopback_reference_sample": None,
        },
    )
    ours = load_ours()
    with tempfile.TemporaryDirectory(prefix="bench-site-") as tmp, LoopbackSite(Path(tmp), latency) as site:
        started = time.perf_counter()
        hosted = generate_site(Path(tmp), site.base_url, badges=badges, issuers=issuers)
        part.notes.append(
            f"generated {len(hosted)} assertions + {issuers} issuers/badge classes/images in "
            f"{time.perf_counter() - started:.1f} s, served from a separate process"
        )
        picked = sorted(random.Random(seed).sample(range(len(hosted)), min(sample, len(hosted))))
        urls = [b.url for b in hosted]
        ours_by_url: dict[str, str] = {}
        if isinstance(ours, str):
            part.notes.append(f"ours: not run: {ours}")
        else:
            ours_by_url = _loopback_ours(part, site, ours, hosted, urls, picked, workers, sequential_sample)
        if reference_error is not None:
            part.notes.append(f"reference: not run: {reference_error}")
        else:
            _loopback_reference(part, site, hosted, picked, ours_by_url)
    ours_rate = part.figures["verify_loopback_ours_per_s"]
    ref_rate = part.figures["verify_loopback_reference_per_s"]
    if ours_rate and ref_rate:
        ratio = round(ours_rate / ref_rate, 1)
        part.figures["verify_loopback_ratio"] = ratio
        goal = "meets" if ratio >= 20 else "MISSES"
        part.notes.append(f"ratio ours/reference = {ratio}x ({goal} the >= 20x goal)")
    else:
        part.notes.append("ratio ours/reference: not available (one side did not run)")
    return part


def _loopback_ours(
    part: Part,
    site: LoopbackSite,
    ours: tuple[Any, Any, Any],
    hosted: list[HostedBadge],
    urls: list[str],
    picked: list[int],
    workers: int,
    sequential_sample: bool,
) -> dict[str, str]:
    verifier_cls, _, safe_fetcher_cls = ours
    try:
        before = site.requests_served()
        verifier = verifier_cls(safe_fetcher_cls(allow_loopback=True))
        started = time.perf_counter()
        verdicts = verifier.verify_many(urls, (), workers=workers)
        elapsed = time.perf_counter() - started
        requests = site.requests_served() - before
    except Exception as exc:
        part.notes.append(f"ours: failed: {type(exc).__name__}: {exc}")
        return {}
    valid = sum(bool(v.valid) for v in verdicts)
    rate = per_second(len(urls), elapsed)
    part.figures["verify_loopback_ours_per_s"] = rate
    part.rows.append(
        [
            f"ours, verify_many workers={workers}",
            str(len(urls)),
            str(valid),
            f"{elapsed:.2f}",
            str(rate),
            str(requests),
            f"{requests / len(urls):.2f}",
        ]
    )
    if valid < len(urls):
        first = next(v for v in verdicts if not v.valid)
        part.notes.append(f"ours: {len(urls) - valid} badges invalid, e.g. {_codes(first)}")
    by_url = {u: verdict(bool(v.valid)) for u, v in zip(urls, verdicts, strict=True)}
    # The recipient check: the same sample with each learner's email, on a fresh verifier.
    try:
        checker = verifier_cls(safe_fetcher_cls(allow_loopback=True))
        matched = sum(bool(checker.verify(hosted[i].url, (hosted[i].email,)).valid) for i in picked[:50])
        wrong = sum(
            bool(checker.verify(hosted[i].url, ("someone.else@example.net",)).valid) for i in picked[:10]
        )
        part.notes.append(
            f"ours, recipient check on {min(50, len(picked))} sampled badges: {matched} match the "
            f"learner's email; {wrong}/{min(10, len(picked))} match a wrong email"
        )
    except Exception as exc:
        part.notes.append(f"ours: recipient check failed: {type(exc).__name__}: {exc}")
    if sequential_sample:
        try:
            before = site.requests_served()
            fresh = verifier_cls(safe_fetcher_cls(allow_loopback=True))
            sample_urls = [urls[i] for i in picked]
            started = time.perf_counter()
            seq = [fresh.verify(u) for u in sample_urls]
            elapsed = time.perf_counter() - started
            requests = site.requests_served() - before
            part.rows.append(
                [
                    "ours, sample, one at a time",
                    str(len(seq)),
                    str(sum(bool(v.valid) for v in seq)),
                    f"{elapsed:.2f}",
                    str(per_second(len(seq), elapsed)),
                    str(requests),
                    f"{requests / max(1, len(seq)):.2f}",
                ]
            )
        except Exception as exc:
            part.notes.append(f"ours, sequential sample: failed: {type(exc).__name__}: {exc}")
    return by_url


def _loopback_reference(
    part: Part, site: LoopbackSite, hosted: list[HostedBadge], picked: list[int], ours_by_url: dict[str, str]
) -> None:
    job = loopback_reference_job(site.base_url, hosted, picked)
    try:
        out = reference.run_reference(job)
    except reference.ReferenceSetupError as exc:
        part.notes.append(f"reference: failed: {exc}")
        return
    results = out["results"]
    requests = int(out.get("site_requests") or 0)
    rate = per_second(len(results), out["verify_s"])
    valid = sum(bool(r["valid"]) for r in results)
    part.figures["verify_loopback_reference_per_s"] = rate
    part.figures["verify_loopback_reference_sample"] = len(results)
    part.rows.append(
        [
            "reference, sample, one at a time",
            str(len(results)),
            str(valid),
            f"{out['verify_s']:.2f}",
            str(rate),
            str(requests),
            f"{requests / max(1, len(results)):.2f}",
        ]
    )
    part.notes.append(
        f"reference sample: {len(results)} of {len(hosted)} badges, fixed seed; the project's copies "
        "of the JSON-LD contexts served by responses, everything else over real HTTP to the loopback site"
    )
    if valid < len(results):
        first = next(r for r in results if not r["valid"])
        part.notes.append(f"reference: {len(results) - valid} invalid, e.g. {first['errors'][:2]}")
    if ours_by_url:
        same = sum(
            ours_by_url.get(hosted[i].url) == verdict(r["valid"])
            for i, r in zip(picked, results, strict=True)
        )
        part.notes.append(f"verdict agreement ours/reference on the sample: {same}/{len(results)}")


def run(args: argparse.Namespace | None = None) -> list[Part]:
    args = args or parse_args([])
    reference_error = prepare_reference()
    parts = [bench_corpus(rounds=args.rounds, reference_error=reference_error)]
    parts.append(
        bench_loopback(
            badges=args.badges,
            issuers=args.issuers,
            sample=args.sample,
            workers=args.workers,
            latency=args.latency,
            reference_error=reference_error,
        )
    )
    return parts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Verification throughput: ours against the reference.")
    parser.add_argument("--badges", type=int, default=10_000)
    parser.add_argument("--issuers", type=int, default=200)
    parser.add_argument("--sample", type=int, default=250, help="badges the reference verifies in (b)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added per loopback request")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over the corpus in (a)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    for part in run(parse_args(argv)):
        print(render(part))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
