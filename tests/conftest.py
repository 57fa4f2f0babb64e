"""Shared fixtures: the bundled flow, the clinical references beside the repo, the fake
Bot API server, and a new database of each store (`db`)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from bot.engine import Engine
from bot.flow import Flow
from bot.loader import load_flow

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


@contextlib.asynccontextmanager
async def new_database():
    """A new, empty PostgreSQL database on the test server (its URL), dropped after."""
    if not PG_ADMIN:
        pytest.skip("no PostgreSQL (set TRIAGEBOT_TEST_POSTGRES=postgresql://...; .ci/run "
                    "starts one)")
    import asyncpg

    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def db(request, tmp_path) -> Path | str:
    """Where the bot under test keeps its data, once for each store: a new SQLite file,
    then a new database on the test PostgreSQL server. A test that takes `db` runs on
    both (read its rows with helpers.rows), so the stores keep one behaviour."""
    if request.param == "sqlite":
        yield tmp_path / "bot.sqlite3"
        return
    async with new_database() as url:
        yield url


@pytest_asyncio.fixture
async def pg_dsn():
    """A new PostgreSQL database, for the tests only PostgreSQL has (several workers)."""
    async with new_database() as url:
        yield url
