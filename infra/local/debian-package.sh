# Sourced by install-browser.sh and install-mariadb.sh: installing the Debian package a test
# suite needs, only when it is missing. The caller sets, before calling install_when_missing:
#   SCRIPT     its own name, which starts every message
#   TOOL       what is needed, in words ("Chromium")
#   NEEDED_BY  who needs it ("the browser tests")
#   OVERRIDE   the variable a user sets to name their own copy (CHROMIUM, MARIADBD)
#   PACKAGES   an array: the package, then any it should bring that apt only recommends
# and defines found_tool, which prints the tool's path and succeeds when it is usable.
# CI set: a tool that cannot be installed is an error; unset: a warning, and the tests skip.

cannot_install() {
    echo "$SCRIPT: $1" >&2
    if [[ -n "${CI:-}" ]]; then
        echo "$SCRIPT: CI is set, so $NEEDED_BY must run: install $TOOL first." >&2
        exit 1
    fi
    echo "$SCRIPT: $NEEDED_BY will be skipped on this machine." >&2
    exit 0
}

install_when_missing() {
    local tool package="${PACKAGES[0]}"
    if tool=$(found_tool); then
        echo "$SCRIPT: $TOOL is present: $tool ($("$tool" --version 2>/dev/null || echo 'version unknown'))"
        return 0
    fi
    if [[ -n "${!OVERRIDE:-}" ]]; then
        echo "$SCRIPT: $OVERRIDE=${!OVERRIDE} does not name a usable $TOOL." >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        cannot_install "$TOOL is missing and this is not a Debian/Ubuntu machine (no apt-get); install $package and set $OVERRIDE to its path."
    fi
    local sudo_cmd=()
    if [[ "$(id -u)" -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo_cmd=(sudo -n)
        else
            cannot_install "$TOOL is missing; install it with: sudo apt-get install -y ${PACKAGES[*]}"
        fi
    fi
    apt() {
        # policy-rc.d is not ours to change, so a package's own service may start; the tests
        # never use one (they start what they need themselves).
        "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0 \
            -o DPkg::Lock::Timeout=300 "$@"
    }
    echo "$SCRIPT: installing Debian's $package package..."
    # The package lists are fetched only when apt does not know the package yet or the install
    # fails (lists too old for the mirror); a fresh container has no lists at all.
    if ! apt-cache show "$package" >/dev/null 2>&1; then
        apt update || echo "$SCRIPT: apt-get update reported a problem; trying the install anyway" >&2
    fi
    if ! apt install -y --no-install-recommends "${PACKAGES[@]}"; then
        apt update || true
        if ! apt install -y --no-install-recommends "${PACKAGES[@]}"; then
            echo "$SCRIPT: 'apt-get install $package' failed (see above); $NEEDED_BY need it." >&2
            exit 1
        fi
    fi
    if ! tool=$(found_tool); then
        echo "$SCRIPT: $package was installed but $TOOL was not found." >&2
        exit 1
    fi
    echo "$SCRIPT: installed $("$tool" --version 2>/dev/null || echo "$tool")"
}
