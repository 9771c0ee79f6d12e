"""Fixtures for tests against a real PostgreSQL (never a mock)."""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from jobwarden.config import load_settings
from jobwarden.context import AppContext
from jobwarden.db.leader import Leadership
from jobwarden.db.migrations import load_migrations
from jobwarden.db.pool import Database, open_pool
from jobwarden.liveness import Liveness
from jobwarden.sdnotify import Notifier
from tests.integration.fakes.sendgrid import SendGridFake
from tests.integration.fakes.services import SECRET, Services
from tests.integration.fakes.slack import SlackFake
from tests.integration.fakes.webhook import WebhookFake
from tests.integration.pgcluster import Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """TEST_DATABASE_URL (a role allowed to CREATE DATABASE) or an embedded server."""
    admin_dsn = os.environ.get("TEST_DATABASE_URL")
    if not admin_dsn:
        import pgserver  # the `embedded` extra, installed by `make test`

        server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
        admin_dsn = str(server.get_uri("postgres"))
    cluster = Cluster(admin_dsn)
    cluster.build_template()
    yield cluster
    cluster.drop_template()


@pytest.fixture
def migrated_dsn(cluster: Cluster) -> Iterator[str]:
    """A database of its own, already migrated (cloned from the template)."""
    with cluster.database(migrated=True) as dsn:
        yield dsn


@pytest.fixture
def empty_dsn(cluster: Cluster) -> Iterator[str]:
    """A database of its own with nothing in it."""
    with cluster.database(migrated=False) as dsn:
        yield dsn


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@asynccontextmanager
async def app_context(dsn: str, **env: str) -> AsyncIterator[AppContext]:
    """An AppContext with a pool of its own on `dsn`; `env` sets configuration variables."""
    settings = load_settings({"DATABASE_URL": dsn, **env})
    assert settings.database is not None
    db = Database(await open_pool(settings.database, settings), settings.database)
    try:
        async with aiohttp.ClientSession() as http:
            yield AppContext(
                settings=settings,
                db=db,
                http=http,
                notifier=Notifier(None),
                liveness=Liveness(stale_after=15),
                migrations=load_migrations(),
                leader=Leadership(None),
            )
    finally:
        await db.close()


@pytest.fixture
async def ctx(migrated_dsn: str) -> AsyncIterator[AppContext]:
    """What the daemon hands its passes and handlers, on a migrated database of its own."""
    async with app_context(migrated_dsn) as context:
        yield context


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    async with SlackFake() as slack, WebhookFake(secret=SECRET) as hook, SendGridFake() as email:
        yield Services(slack, hook, email)
