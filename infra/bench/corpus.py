"""The Open Badges conformance corpus (``../shared/ob-corpus`` beside the project), read at bench time.

Nothing from the corpus is copied into the project: the files are read where they lie, and the
corpus part of the benchmark is skipped when the folder is absent.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS_DIR = PROJECT_ROOT.parent / "shared" / "ob-corpus"

_URL_RE = re.compile(rb"https?://[^\s\"'<>\\\]\[{}]+")


def corpus_dir() -> Path:
    """Where the corpus is (``OB_CORPUS_DIR`` overrides the default beside the project)."""
    return Path(os.environ.get("OB_CORPUS_DIR") or DEFAULT_CORPUS_DIR)


def content_type_for(name: str) -> str:
    if name.endswith(".png"):
        return "image/png"
    if name.endswith(".svg"):
        return "image/svg+xml"
    if name.endswith(".json"):
        return "application/ld+json"
    return "text/plain"


@dataclass(frozen=True)
class Served:
    url: str
    path: Path
    status: int = 200

    @property
    def content_type(self) -> str:
        return content_type_for(self.path.name)


@dataclass(frozen=True)
class Scenario:
    name: str
    input: dict[str, str]
    serve: tuple[Served, ...]
    expected: str
    reference_recorded: str
    recipient: str | None = None

    def recipients(self) -> tuple[str, ...]:
        return (self.recipient,) if self.recipient else ()


@dataclass
class Corpus:
    root: Path
    contexts: tuple[Served, ...]
    image_pattern: str
    image_file: Path
    unknown_status: int
    scenarios: list[Scenario] = field(default_factory=list)

    def source_for(self, scenario: Scenario) -> bytes | str:
        """The input as our verifier takes it: a URL, the JSON/JWS text, or the image's bytes."""
        spec = scenario.input
        if "url" in spec:
            return spec["url"]
        if "text_file" in spec:
            return (self.root / spec["text_file"]).read_text(encoding="utf-8").strip()
        return (self.root / spec["file"]).read_bytes()

    def mapping_for(self, scenario: Scenario) -> dict[str, tuple[int, bytes, str]]:
        """URL -> (status, body, content type) for ``MapFetcher``: the scenario's documents, the
        contexts, and the fallback image for every image-like URL found in any of them."""
        mapping: dict[str, tuple[int, bytes, str]] = {}
        for served in (*self.contexts, *scenario.serve):
            mapping[served.url] = (served.status, served.path.read_bytes(), served.content_type)
        image = self.image_file.read_bytes()
        pattern = re.compile(self.image_pattern)
        blobs = [body for _, body, _ in mapping.values()]
        source = self.source_for(scenario)
        blobs.append(source.encode("utf-8") if isinstance(source, str) else source)
        for blob in list(blobs):
            blobs.extend(_jws_payloads(blob))
        for blob in blobs:
            for match in _URL_RE.finditer(blob):
                url = match.group(0).decode("utf-8", "replace").rstrip(".,;)")
                if url not in mapping and pattern.search(url):
                    mapping[url] = (200, image, "image/png")
        return mapping

    def documents_for(self, scenario: Scenario) -> list[Any]:
        """Every JSON document the scenario puts before a verifier: the ones it serves, its input
        (JSON text, a compact JWS's payload, or what is baked into its image)."""
        from backpack_migrate.openbadges import UnbakeError, unbake

        source = self.source_for(scenario)
        if isinstance(source, bytes):
            try:
                source = unbake(source)
            except UnbakeError:
                source = ""
        blobs = [served.path.read_bytes() for served in scenario.serve]
        blobs.append(source.encode("utf-8"))
        blobs.extend(payload for blob in list(blobs) for payload in _jws_payloads(blob))
        documents = []
        for blob in blobs:
            try:
                documents.append(json.loads(blob))
            except ValueError:
                continue
        return documents

    def reference_item(self, scenario: Scenario) -> dict[str, Any]:
        spec = scenario.input
        if "url" in spec:
            source: dict[str, str] = {"url": spec["url"]}
        elif "text_file" in spec:
            source = {"text_file": str(self.root / spec["text_file"])}
        else:
            source = {"file": str(self.root / spec["file"])}
        return {
            "name": scenario.name,
            "input": source,
            "recipient": {"email": scenario.recipient} if scenario.recipient else None,
            "serve": {
                s.url: {"status": s.status, "content_type": s.content_type, "file": str(s.path)}
                for s in scenario.serve
            },
        }

    def reference_job(self, rounds: int = 1) -> dict[str, Any]:
        items = [self.reference_item(s) for s in self.scenarios]
        return {
            "mode": "serve",
            "contexts": {c.url: {"file": str(c.path), "content_type": c.content_type} for c in self.contexts},
            "fallback": {
                "image_pattern": self.image_pattern,
                "image_file": str(self.image_file),
                "unknown_status": self.unknown_status,
            },
            "warmup": 1,
            "items": items * rounds,
        }


def context_iris(document: Any) -> set[str]:
    """The context IRIs a JSON-LD document names: its own ``@context`` and any node's (an
    extension names its own), at any depth."""
    found: set[str] = set()
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            context = node.get("@context")
            found.update(entry for entry in (context if isinstance(context, list) else [context])
                         if isinstance(entry, str))  # fmt: skip
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _jws_payloads(blob: bytes) -> list[bytes]:
    """Decoded payloads of compact JWS strings in ``blob`` (their image URLs need serving too)."""
    found = []
    for match in re.finditer(rb"eyJ[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]*", blob):
        payload = match.group(1)
        try:
            found.append(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        except ValueError:
            continue
    return found


def load_corpus(root: Path | None = None) -> Corpus | None:
    """The corpus, or None when its folder (or ``scenarios.json``) is absent."""
    root = root or corpus_dir()
    index = root / "scenarios.json"
    if not index.is_file():
        return None
    data = json.loads(index.read_text(encoding="utf-8"))
    contexts = tuple(
        Served(url, root / spec["file"], int(spec.get("status", 200)))
        for url, spec in data["always_serve"].items()
    )
    fallback = data.get("image_fallback") or {}
    corpus = Corpus(
        root=root,
        contexts=contexts,
        image_pattern=fallback.get("applies_to_urls_matching", r"\.png$"),
        image_file=root / fallback.get("file", ""),
        unknown_status=int((data.get("unknown_url") or {}).get("status", 404)),
    )
    for raw in data["scenarios"]:
        corpus.scenarios.append(
            Scenario(
                name=raw["name"],
                input=dict(raw["input"]),
                serve=tuple(
                    Served(url, root / spec["file"], int(spec.get("status", 200)))
                    for url, spec in raw["serve"].items()
                ),
                expected=str(raw["expected"]),
                reference_recorded=str(raw.get("reference_openbadges_1_1_2", "")),
                recipient=(raw.get("recipient") or {}).get("email"),
            )
        )
    return corpus


def verdict(valid: bool | None) -> str:
    if valid is None:
        return "error"
    return "valid" if valid else "invalid"
