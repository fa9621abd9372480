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
source "$(dirname "${BASH_SOURCE[0]}")/debian-package.sh"

SCRIPT=install-browser
TOOL=Chromium
NEEDED_BY="the browser tests"
OVERRIDE=CHROMIUM
# fonts-liberation is recommended, not required, by chromium; without a font pages render as boxes.
PACKAGES=(chromium fonts-liberation)

found_tool() {
    local candidate
    for candidate in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

install_when_missing
