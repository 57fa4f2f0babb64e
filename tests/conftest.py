"""Shared fixtures: the bundled flow, the clinical references beside the repo."""

from __future__ import annotations

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
