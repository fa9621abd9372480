#!/usr/bin/env bash
# MariaDB server for the database tests, demo and bench (infra/local/mariadb.py), installed only
# when missing. Nothing is started here and no system service is touched: the tests run their
# own server on a private socket and data folder.
#
#   MARIADBD=/path/to/mariadbd  use that server instead (nothing is installed)
#   CI=...                      set: a server that cannot be installed is an error;
#                               unset: a warning, and the database tests skip themselves
set -euo pipefail

PACKAGE=mariadb-server
# mariadb-server brings the client tools too (mariadb, mariadb-install-db, mariadb-dump).

found_server() {
    local candidate
    for candidate in "${MARIADBD:-}" /usr/sbin/mariadbd /usr/sbin/mysqld; do
        if [[ -n "$candidate" && -x "$candidate" ]] && command -v mariadb-install-db >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

cannot_install() {
    echo "install-mariadb: $1" >&2
    if [[ -n "${CI:-}" ]]; then
        echo "install-mariadb: CI is set, so the database tests must run: install MariaDB first." >&2
        exit 1
    fi
    echo "install-mariadb: the database tests will be skipped on this machine." >&2
    exit 0
}

if server=$(found_server); then
    echo "install-mariadb: MariaDB is present: $server ($("$server" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if [[ -n "${MARIADBD:-}" ]]; then
    echo "install-mariadb: MARIADBD=$MARIADBD is not an executable file (or mariadb-install-db is missing)." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    cannot_install "MariaDB is missing and this is not a Debian/Ubuntu machine (no apt-get); install mariadb-server and set MARIADBD to its mariadbd."
fi

sudo_cmd=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo_cmd=(sudo -n)
    else
        cannot_install "MariaDB is missing; install it with: sudo apt-get install -y $PACKAGE"
    fi
fi

apt() {
    # policy-rc.d is not ours to change, so the package's own service may start; the tests
    # never use it (they start a private server).
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0 \
        -o DPkg::Lock::Timeout=300 "$@"
}

echo "install-mariadb: installing Debian's $PACKAGE package..."
if ! apt-cache show "$PACKAGE" >/dev/null 2>&1; then
    apt update || echo "install-mariadb: apt-get update reported a problem; trying the install anyway" >&2
fi
if ! apt install -y --no-install-recommends "$PACKAGE"; then
    apt update || true
    if ! apt install -y --no-install-recommends "$PACKAGE"; then
        echo "install-mariadb: 'apt-get install $PACKAGE' failed (see above); the database tests need it." >&2
        exit 1
    fi
fi

if ! server=$(found_server); then
    echo "install-mariadb: $PACKAGE was installed but no mariadbd was found." >&2
    exit 1
fi
echo "install-mariadb: installed $("$server" --version 2>/dev/null || echo "$server")"
