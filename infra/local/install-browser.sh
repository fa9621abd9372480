#!/usr/bin/env bash
# Chromium for the browser tests (tests/e2e/test_pages_browser.py), installed only when missing.
#
# The tests drive the system Chromium through Playwright; they never download a browser.
# Safe to run again and again: when Chromium is already there it only says so.
#
#   CHROMIUM=/path/to/chromium  use that browser instead (nothing is installed)
#   CI=...                      set: a browser that cannot be installed is an error;
#                               unset: a warning, and the browser tests skip themselves
set -euo pipefail

PACKAGE=chromium
# Recommended, not required, by chromium; without a font the pages render as boxes.
EXTRAS=(fonts-liberation)

found_browser() {
    local candidate
    for candidate in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

cannot_install() {
    echo "install-browser: $1" >&2
    if [[ -n "${CI:-}" ]]; then
        echo "install-browser: CI is set, so the browser tests must run: install Chromium first." >&2
        exit 1
    fi
    echo "install-browser: the browser tests will be skipped on this machine." >&2
    exit 0
}

if browser=$(found_browser); then
    echo "install-browser: Chromium is present: $browser ($("$browser" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [[ -n "${CHROMIUM:-}" ]]; then
    echo "install-browser: CHROMIUM=$CHROMIUM is not an executable file." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    cannot_install "Chromium is missing and this is not a Debian/Ubuntu machine (no apt-get); install Chromium and set CHROMIUM to its path."
fi

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo_cmd=(sudo -n)
    else
        cannot_install "Chromium is missing; install it with: sudo apt-get install -y $PACKAGE"
    fi
fi

apt() {
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0 \
        -o DPkg::Lock::Timeout=300 "$@"
}

echo "install-browser: installing Debian's $PACKAGE package..."
# The package lists are fetched only when apt does not know the package yet or the install fails
# (lists too old for the mirror); a fresh container has no lists at all.
if ! apt-cache show "$PACKAGE" >/dev/null 2>&1; then
    apt update || echo "install-browser: apt-get update reported a problem; trying the install anyway" >&2
fi
if ! apt install -y --no-install-recommends "$PACKAGE" "${EXTRAS[@]}"; then
    apt update || true
    if ! apt install -y --no-install-recommends "$PACKAGE" "${EXTRAS[@]}"; then
        echo "install-browser: 'apt-get install $PACKAGE' failed (see above); the browser tests need it." >&2
        exit 1
    fi
fi

if ! browser=$(found_browser); then
    echo "install-browser: $PACKAGE was installed but no chromium executable was found." >&2
    exit 1
fi
echo "install-browser: installed $("$browser" --version 2>/dev/null || echo "$browser")"
