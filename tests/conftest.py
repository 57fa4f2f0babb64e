"""Shared fixtures: the bundled flow, the clinical references beside the repo, the fake
Bot API server, and a new database of each store (`db`)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from bot.engine import Engine
from bot.flow import Flow
from bot.loader import load_flow

from .helpers import rows

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "flows"
BUNDLED = FLOWS / "back_pain_fever.yaml"
SHARED = ROOT.parent / "shared" / "triage"
# the test PostgreSQL server's admin URL: `.ci/run` starts a throwaway cluster and sets it
PG_ADMIN = os.environ.get("TRIAGEBOT_TEST_POSTGRES", "")


@pytest.fixture(scope="session")
def flow() -> Flow:
    return load_flow(BUNDLED)


@pytest.fixture(scope="session")
def engine(flow: Flow) -> Engine:
    return Engine(flow)


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/triage, the clinical references; CI lays it beside the clone."""
    if not SHARED.exists():
        pytest.skip("../shared/triage (the clinical references) is not beside this checkout")
    return SHARED


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/ from the current output (review the diff)")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest_asyncio.fixture
async def fake():
    """The strict fake Bot API server, on a free local port."""
    from .fake_telegram import FakeTelegram

    server = FakeTelegram()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def pg_database() -> str:
    """One database on the test PostgreSQL server for this run (its URL), dropped at the
    end. A new database costs about 0.4 s here; emptying this one, 20 ms."""
    if not PG_ADMIN:
        pytest.skip("no PostgreSQL (set TRIAGEBOT_TEST_POSTGRES=postgresql://...; .ci/run "
                    "starts one)")
    name = "t_" + uuid.uuid4().hex[:12]
    rows(PG_ADMIN, f"CREATE DATABASE {name}")
    yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    rows(PG_ADMIN, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def pg_dsn(pg_database: str) -> str:
    """The run's PostgreSQL database, emptied: as new, for each test. Connections an
    earlier test left (a killed worker's) are ended first, with their locks and
    listeners, then the schema goes, tables, sequences, migrations record and all."""
    rows(pg_database, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    rows(pg_database, "DROP SCHEMA public CASCADE")
    rows(pg_database, "CREATE SCHEMA public")
    return pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the bot under test keeps its data, once for each store: a new SQLite file,
    then an empty PostgreSQL database. A test that takes `db` runs on both (read its rows
    with helpers.rows), so the two stores keep one behaviour."""
    if request.param == "sqlite":
        return tmp_path / "bot.sqlite3"
    return request.getfixturevalue("pg_dsn")
