"""Tests on a real MariaDB: one private server for the session, with the Backpack's schema."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backpack_migrate.export_db import ExportSummary, export_database
from infra.local.backpack_data import SampleDatabase, fill_sample
from infra.local.mariadb import SCHEMA_SQL, MariaDBServer, MariaDBUnavailableError, missing_tools

SAMPLE = "backpack_sample"


def _unavailable(reason: str) -> None:
    # make test installs the server (infra/local/install-mariadb.sh); CI must not skip silently.
    if os.environ.get("CI"):
        pytest.fail(f"MariaDB is needed here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    reason = missing_tools()
    if reason:
        _unavailable(reason)
    if not SCHEMA_SQL.is_file():
        pytest.skip(
            "the Backpack's schema (../shared/backpack-db/schema.sql beside the project) is not present"
        )
    server = MariaDBServer()
    try:
        server.start()
    except MariaDBUnavailableError as error:
        _unavailable(str(error))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sample(mariadb: MariaDBServer, tmp_path_factory: pytest.TempPathFactory) -> SampleDatabase:
    mariadb.create_database(SAMPLE)
    # The issuer site is written but not served: these tests read the export, not the badges' hosts.
    return fill_sample(mariadb, SAMPLE, tmp_path_factory.mktemp("site"), "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def sample_export(
    mariadb: MariaDBServer, sample: SampleDatabase, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ExportSummary]:
    out = tmp_path_factory.mktemp("export") / "backpack-export.zip"
    return out, export_database(mariadb.url(sample.database), out)
