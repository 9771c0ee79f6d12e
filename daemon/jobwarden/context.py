"""What every periodic pass and HTTP handler is handed: built once in `daemon.py`."""

import time
from dataclasses import dataclass, field

import aiohttp

from jobwarden.config import Settings
from jobwarden.db.leader import Leadership
from jobwarden.db.migrations import Migration
from jobwarden.db.pool import Database
from jobwarden.liveness import Liveness
from jobwarden.sdnotify import Notifier


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    db: Database
    http: aiohttp.ClientSession  # the one outgoing HTTP session, explicit timeouts
    notifier: Notifier
    liveness: Liveness
    migrations: tuple[Migration, ...]
    leader: Leadership  # whether this replica runs the passes that judge and write
    started_at: float = field(default_factory=time.monotonic)
