"""`jobwarden run`: the daemon's life from configuration to exit.

connect (waiting while the database is unreachable) → migrate → verify the shared
tables → HTTP server, scheduler, listener, delivery dispatcher, outage watch, DLQ
processor → READY=1 → run until SIGTERM/SIGINT → STOPPING=1 → stop the scheduler,
the dispatcher and the DLQ processor (work in flight gets the grace period; claimed
but unsent notifications and unstarted retries are handed back) and the server →
close the pool → exit 0.
"""

import asyncio
import contextlib
import gc
import signal
from enum import Enum

import aiohttp

from jobwarden import exitcodes
from jobwarden.alerts import outbox, sweep
from jobwarden.alerts.channels import Channel, configured_channels
from jobwarden.alerts.dispatcher import DeliveryDispatcher
from jobwarden.alerts.outage import DatabaseOutageWatch
from jobwarden.api.server import make_app, start_server
from jobwarden.config import Settings
from jobwarden.context import AppContext
from jobwarden.db.embedded import start_embedded
from jobwarden.db.leader import Leadership
from jobwarden.db.listener import Listener
from jobwarden.db.migrations import Migration, apply_migrations, load_migrations
from jobwarden.db.pool import Database, connect_with_retry
from jobwarden.db.schema_check import verify_shared_tables
from jobwarden.dlq import alerting
from jobwarden.dlq import queue as dlq_queue
from jobwarden.dlq.handlers import Router
from jobwarden.dlq.processor import DlqProcessor
from jobwarden.dlq.queue import Routing
from jobwarden.dsn import DatabaseUrl, parse_database_url
from jobwarden.liveness import Liveness
from jobwarden.logsetup import get_logger
from jobwarden.monitoring import baselines, evaluation, retention
from jobwarden.runtime.scheduler import HEARTBEAT_SECONDS, JobScheduler, PeriodicJob, heartbeat_job
from jobwarden.sdnotify import Notifier
from jobwarden.watchdog import run_watchdog

log = get_logger(__name__)


class Phase(Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


async def resolve_database_url(settings: Settings) -> DatabaseUrl:
    """DATABASE_URL, or the embedded PostgreSQL when it is unset."""
    if settings.database is not None:
        for name in settings.database.ignored:
            log.debug("ignoring a DATABASE_URL parameter jobwarden does not use", parameter=name)
        return settings.database
    return parse_database_url(await start_embedded(settings.state_dir))


async def migrate_and_verify(
    db: Database, settings: Settings, migrations: tuple[Migration, ...]
) -> None:
    async with db.connection() as conn:
        applied = await apply_migrations(
            conn,
            migrations,
            lock_timeout=settings.migration_lock_timeout,
            shared_schema=db.url.schema,
        )
        await verify_shared_tables(conn)
    log.info("database schema is current", applied_now=[m.filename for m in applied])


def periodic_jobs(settings: Settings, dlq_routing: Routing) -> list[PeriodicJob]:
    """Every periodic pass of the daemon: the one place they are registered.

    `dlq_routing`: the processor's own, so a job is reported unrouted exactly when the
    processor leaves its entries alone."""
    return [
        heartbeat_job(),
        PeriodicJob(
            evaluation.EVALUATION_JOB,
            settings.poll_interval,
            evaluation.run_once,
            leader_only=True,
        ),
        PeriodicJob("baselines", settings.baseline_interval, baselines.run_once, leader_only=True),
        PeriodicJob(
            retention.RETENTION_JOB,
            retention.RETENTION_INTERVAL_SECONDS,
            retention.run_once,
            leader_only=True,
        ),
        PeriodicJob(sweep.SWEEP_JOB, sweep.SWEEP_INTERVAL_SECONDS, sweep.run_once, quiet=True),
        PeriodicJob(
            alerting.DLQ_ALERTS_JOB,
            settings.poll_interval,
            alerting.alerts_pass(dlq_routing),
            leader_only=True,
        ),
    ]


def session_url(settings: Settings, url: DatabaseUrl) -> DatabaseUrl | None:
    """Where the leader lock and LISTEN live; None when no session can (PgBouncer)."""
    if settings.direct_database is not None:
        return settings.direct_database
    if url.pgbouncer:
        log.warning(
            "DATABASE_URL has pgbouncer=true and DIRECT_URL is unset: a session lock and "
            "LISTEN cannot work through PgBouncer, so this replica assumes it is the only "
            "one and finds new alerts by polling; set DIRECT_URL to run several"
        )
        return None
    return url


async def report_channels(db: Database, channels: list[Channel]) -> None:
    """Say at startup where alerts go, and when they cannot be picked up at once."""
    if not channels:
        log.warning(
            "no alert channel is configured: alerts are recorded but reach nobody; set "
            "SLACK_WEBHOOK_URL, ALERT_WEBHOOK_URL or SENDGRID_API_KEY"
        )
    async with db.connection() as conn:
        if not await conn.fetchval(TRIGGER_PRESENT):
            log.warning(
                "jobwarden's triggers on alerts are missing or disabled: new alerts are found"
                f" by the sweep, within {sweep.SWEEP_INTERVAL_SECONDS:g}s, instead of at once"
            )


TRIGGER_PRESENT = (
    "SELECT count(*) = 2 FROM pg_trigger WHERE tgrelid = 'alerts'::regclass"
    " AND tgname IN ('jobwarden_alerts_inserted', 'jobwarden_alerts_updated')"
    " AND tgenabled <> 'D'"
)


def _freeze_startup_objects() -> None:
    """What start-up built (modules, settings, sessions) lives as long as the daemon:
    put out of the cyclic collector's sight, so the full collections a busy drain
    triggers do not walk all of it each time (6 % of the daemon's CPU in
    bench/dlq_drain.py)."""
    gc.collect()
    gc.freeze()


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.notifier = Notifier(settings.systemd.notify_socket)
        self.stop = asyncio.Event()
        self.phase = Phase.STARTING
        self.liveness = Liveness(stale_after=3 * HEARTBEAT_SECONDS)
        self.scheduler: JobScheduler | None = None
        self.migrations = load_migrations()

    def problem(self) -> str | None:
        """Why the watchdog must not be pinged now, or None."""
        if self.phase is not Phase.RUNNING or self.scheduler is None:
            return None  # start-up and shutdown have their own systemd timeouts
        if not self.scheduler.running:
            return "scheduler stopped"
        if not self.liveness.fresh():
            return "scheduler heartbeat stale"
        return None

    def _on_signal(self, signum: int) -> None:
        log.info("received signal; shutting down", signal=signal.Signals(signum).name)
        self.stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        watchdog = None
        if self.settings.systemd.watchdog_usec:
            watchdog = asyncio.create_task(
                run_watchdog(self.notifier, self.settings.systemd.watchdog_usec, self.problem)
            )
        try:
            return await self._run()
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog

    async def _run(self) -> int:
        self.notifier.status("Connecting to the database")
        url = await resolve_database_url(self.settings)
        db = await connect_with_retry(url, self.settings, self.notifier, self.stop)
        if db is None:
            self.notifier.stopping()
            log.info("stopped before the database was reachable")
            return exitcodes.OK
        try:
            self.notifier.status("Applying migrations")
            await migrate_and_verify(db, self.settings, self.migrations)
            if self.stop.is_set():
                self.notifier.stopping()
                return exitcodes.OK
            return await self._serve(db)
        finally:
            await db.close()
            log.info("database pool closed")

    async def _serve(self, db: Database) -> int:
        settings = self.settings
        timeout = aiohttp.ClientTimeout(total=settings.http_client_timeout, connect=10)
        sessions = session_url(settings, db.url)
        leader = Leadership(sessions, connect_timeout=settings.db_connect_timeout)
        listener = Listener(sessions, connect_timeout=settings.db_connect_timeout)
        services_stop = asyncio.Event()
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as http:
            ctx = AppContext(
                settings=settings,
                db=db,
                http=http,
                notifier=self.notifier,
                liveness=self.liveness,
                migrations=self.migrations,
                leader=leader,
            )
            channels = configured_channels(settings, http, sandbox=settings.sendgrid_sandbox)
            await report_channels(db, channels)
            dispatcher = DeliveryDispatcher(ctx, channels)
            listener.subscribe(outbox.NOTIFY_CHANNEL, dispatcher.wake)
            dlq = DlqProcessor(ctx, Router.from_settings(settings, http))
            listener.subscribe(dlq_queue.NOTIFY_CHANNEL, dlq.wake)
            outage = DatabaseOutageWatch(
                ctx, channels, state_file=settings.state_dir / "outage.json"
            )
            self.scheduler = JobScheduler(ctx, periodic_jobs(settings, dlq.router.routing))
            runner, port = await start_server(
                make_app(ctx, self.scheduler, dlq.state), settings.http_host, settings.http_port
            )
            await leader.check()  # lead from the first pass when nobody else does
            services = [
                asyncio.create_task(leader.run(services_stop), name="leader"),
                asyncio.create_task(listener.run(services_stop), name="listener"),
                asyncio.create_task(outage.run(services_stop), name="outage-watch"),
            ]
            try:
                self.scheduler.start()
                dispatcher.start()
                await dlq.start()
                self.phase = Phase.RUNNING
                _freeze_startup_objects()
                self.notifier.ready(f"Watching jobs; HTTP on {settings.http_host}:{port}")
                log.info(
                    "jobwarden ready",
                    http=f"{settings.http_host}:{port}",
                    jobs=self.scheduler.job_names,
                    role=leader.role,
                    channels=[c.name for c in channels],
                    dlq_default_url=dlq.router.has_default,
                    dlq_python_handlers=list(dlq.router.python_jobs),
                    watchdog=bool(settings.systemd.watchdog_usec),
                )
                await self.stop.wait()
                self.phase = Phase.STOPPING
                self.notifier.stopping("Stopping: finishing work in flight")
            finally:
                await asyncio.gather(
                    self.scheduler.shutdown(grace=settings.shutdown_grace),
                    dispatcher.stop(grace=settings.shutdown_grace),
                    dlq.stop(grace=settings.shutdown_grace),
                )
                services_stop.set()
                await asyncio.gather(*services, return_exceptions=True)
                await runner.cleanup()
        log.info("jobwarden stopped")
        return exitcodes.OK
