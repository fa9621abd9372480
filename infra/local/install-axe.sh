#!/usr/bin/env bash
# axe-core for the accessibility checks of the browser tests (tests/e2e/test_pages_browser.py),
# installed from the npm registry into infra/local/browser/node_modules at the version that
# infra/local/browser/package-lock.json pins. Safe to run again: when it is there, it says so.
#
#   CI=...   set: missing Node.js/npm or a failed install is an error;
#            unset: a warning, and the browser tests fail their axe checks with that message
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/browser"
wanted="$(sed -n 's/.*"axe-core": "\([^"]*\)".*/\1/p' "$here/package.json" | head -1)"
installed="$here/node_modules/axe-core/package.json"

if [[ -f "$installed" ]] && grep -q "\"version\": \"$wanted\"" "$installed"; then
    echo "install-axe: axe-core $wanted is present in $here/node_modules"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install-axe: npm (Node.js) is needed to install axe-core $wanted for the accessibility checks." >&2
    if [[ -n "${CI:-}" ]]; then
        exit 1
    fi
    echo "install-axe: the browser tests will report the checks as not run." >&2
    exit 0
fi

echo "install-axe: installing axe-core $wanted from the npm registry..."
# `npm ci` installs exactly what the lock file names and never rewrites it.
npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
echo "install-axe: installed axe-core $wanted"
