#!/usr/bin/env bash
# MariaDB server for the database tests, demo and bench (infra/local/mariadb.py), installed only
# when missing. Nothing is started here and no system service is touched: the tests run their
# own server on a private socket and data folder.
#
#   MARIADBD=/path/to/mariadbd  use that server instead (nothing is installed)
#   CI=...                      set: a server that cannot be installed is an error;
#                               unset: a warning, and the database tests skip themselves
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/debian-package.sh"

SCRIPT=install-mariadb
TOOL=MariaDB
NEEDED_BY="the database tests"
OVERRIDE=MARIADBD
# mariadb-server brings the client tools too (mariadb, mariadb-install-db, mariadb-dump).
PACKAGES=(mariadb-server)

found_tool() {
    local candidate
    for candidate in "${MARIADBD:-}" /usr/sbin/mariadbd /usr/sbin/mysqld; do
        if [[ -n "$candidate" && -x "$candidate" ]] && command -v mariadb-install-db >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

install_when_missing
