"""`jobwarden dlq ...`: the dead-letter queue, the same functions as `/api/dlq`.

  dlq list [--status S] [--job J] [--limit N] [--json] | show ID [--json]
  dlq retry ID | retry --job J | retry --all-failed
  dlq discard ID --reason R
  dlq stats [--json]
  dlq route set JOB URL | route unset JOB | route list [--json]

Bad flags exit 64 naming the flag, with nothing written. An unknown id, or an entry
whose status refuses the action (PROCESSING: in flight; SUCCEEDED: done), exits 1 with
a message. Route URLs are shown redacted (no credentials, no query), never as given.
"""

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from jobwarden import exitcodes
from jobwarden.alerts.views import DEFAULT_LIMIT, MAX_LIMIT, parse_limit
from jobwarden.cli.database import open_database
from jobwarden.cli.parser import Commands
from jobwarden.config import Settings
from jobwarden.db.pg import Conn
from jobwarden.dlq import admin, routes
from jobwarden.dlq.admin import Refused, Retried, UnknownEntry
from jobwarden.dlq.handlers import load_entry_points
from jobwarden.dlq.routes import InvalidInput

ERROR_WIDTH = 60  # of the web app's error in `dlq list`


def _checked(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a domain check: its message, naming no secret."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except InvalidInput as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    return parse


def _limit(text: str) -> int:
    try:
        return parse_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(commands: Commands) -> None:
    dlq = commands.add_parser("dlq", help="the dead-letter queue: entries, retries, routes")
    actions = dlq.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="the newest entries")
    listing.add_argument(
        "--status",
        type=_checked(admin.parse_status),
        metavar="S",
        help="only entries with this status: " + ", ".join(admin.STATUSES) + " (any case)",
    )
    listing.add_argument("--job", type=_checked(routes.check_job_id), metavar="J",
                         help="only this job's entries")  # fmt: skip
    listing.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N entries, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")

    show = actions.add_parser("show", help="one entry with its whole history and schedule")
    show.add_argument("entry_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")

    retry = actions.add_parser(
        "retry", help="back to PENDING, due now, with a fresh attempt budget (history kept)"
    )
    retry.add_argument("entry_id", metavar="ID", nargs="?", help="one FAILED or PENDING entry")
    retry.add_argument("--job", type=_checked(routes.check_job_id), metavar="J",
                       help="every FAILED and PENDING entry of this job")  # fmt: skip
    retry.add_argument("--all-failed", action="store_true", help="every FAILED entry")

    discard = actions.add_parser("discard", help="give up on an entry: FAILED, with a reason")
    discard.add_argument("entry_id", metavar="ID")
    discard.add_argument(
        "--reason",
        required=True,
        type=_checked(admin.check_reason),
        metavar="R",
        help=f"why, kept in its history (at most {admin.MAX_REASON_LENGTH} characters)",
    )

    stats = actions.add_parser(
        "stats", help="counts by job and status, oldest pending entry, attempts"
    )
    stats.add_argument("--json", action="store_true", help="print JSON")

    route = actions.add_parser("route", help="where a job's entries are retried")
    route_actions = route.add_subparsers(dest="route_action", required=True, metavar="ACTION")
    set_ = route_actions.add_parser("set", help="retry a job's entries at this URL")
    set_.add_argument("job", metavar="JOB", type=_checked(routes.check_job_id))
    set_.add_argument(
        "url",
        metavar="URL",
        type=_checked(routes.check_url),
        help="http(s); {jobId} is replaced by the job; credentials are never shown",
    )
    unset = route_actions.add_parser("unset", help="forget a job's route")
    unset.add_argument("job", metavar="JOB", type=_checked(routes.check_job_id))
    route_list = route_actions.add_parser(
        "list", help="routes, Python handlers, and whether a default URL is set"
    )
    route_list.add_argument("--json", action="store_true", help="print JSON")


def _fail(message: str, code: int = exitcodes.FAILURE) -> int:
    print(f"jobwarden: {message}", file=sys.stderr)
    return code


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry
        return "cli"


async def _list(conn: Conn, args: argparse.Namespace, _: Settings, __: datetime) -> int:
    entries = await admin.list_entries(conn, args.status, args.job, args.limit)
    _print_entries(entries, as_json=args.json)
    return exitcodes.OK


async def _show(conn: Conn, args: argparse.Namespace, settings: Settings, _: datetime) -> int:
    entry = await admin.show_entry(conn, args.entry_id, max_attempts=settings.dlq_max_attempts)
    if entry is None:
        raise UnknownEntry(args.entry_id)
    _print_entry(entry, as_json=args.json)
    return exitcodes.OK


async def _retry(conn: Conn, args: argparse.Namespace, _: Settings, now: datetime) -> int:
    retried = await admin.retry(
        conn, entry_id=args.entry_id, job=args.job, all_failed=args.all_failed, now=now, by=_by()
    )
    print(describe_retried(retried))
    return exitcodes.OK


async def _discard(conn: Conn, args: argparse.Namespace, _: Settings, now: datetime) -> int:
    was = await admin.discard(conn, args.entry_id, args.reason, now, _by())
    print(f"{args.entry_id}: discarded (was {was}); it is FAILED and will not be retried")
    return exitcodes.OK


async def _stats(conn: Conn, args: argparse.Namespace, _: Settings, now: datetime) -> int:
    _print_stats(await admin.stats(conn, now), as_json=args.json)
    return exitcodes.OK


async def _route(conn: Conn, args: argparse.Namespace, settings: Settings, now: datetime) -> int:
    if args.route_action == "set":
        done = await routes.set_route(conn, args.job, args.url, now)
        print(f"{done.job_id}: {'routed' if done.created else 'route changed'} to {done.url}")
    elif args.route_action == "unset":
        removed = await routes.unset_route(conn, args.job)
        print(f"{args.job}: route removed" if removed else f"{args.job}: had no route")
    else:
        table = routes.routing_table(
            await routes.list_routes(conn),
            load_entry_points(),
            default_url=settings.dlq_retry_url is not None,
        )
        _print_routes(table, as_json=args.json)
    return exitcodes.OK


Action = Callable[[Conn, argparse.Namespace, Settings, datetime], Awaitable[int]]
_ACTIONS: dict[str, Action] = {
    "list": _list,
    "show": _show,
    "retry": _retry,
    "discard": _discard,
    "stats": _stats,
    "route": _route,
}


async def run(settings: Settings, args: argparse.Namespace) -> int:
    action: str = args.dlq_action
    if action == "retry":
        given = (args.entry_id is not None, args.job is not None, args.all_failed)
        if sum(given) != 1:
            return _fail(
                "dlq retry: give exactly one of an entry ID, --job J or --all-failed",
                exitcodes.USAGE,
            )
    db = await open_database(settings)
    try:
        async with db.connection() as conn:
            return await _ACTIONS[action](conn, args, settings, datetime.now(UTC))
    except (UnknownEntry, Refused) as exc:
        return _fail(str(exc))
    finally:
        await db.close()


def describe_retried(retried: Retried) -> str:
    """`1 entry requeued, due now`, `3 entries requeued, due now (2 failed, 1 pending)`."""
    if retried.total == 0:
        return "0 entries requeued: none was FAILED or PENDING"
    noun = "entry" if retried.total == 1 else "entries"
    detail = ""
    if retried.failed and retried.pending:
        detail = f" ({retried.failed} failed, {retried.pending} pending)"
    return f"{retried.total} {noun} requeued, due now{detail}"


# --- printing ---------------------------------------------------------------------


def _time(iso: str | None) -> str:
    return "-" if iso is None else iso.replace("T", " ")[:19] + "Z"


def _one_line(text: str, width: int | None = None) -> str:
    flat = " ".join(text.split())
    if width is not None and len(flat) > width:
        return flat[: width - 1] + "…"
    return flat


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(indent + line.rstrip())


def _age(seconds: float) -> str:
    """`45s`, `12m 5s`, `3h 20m`, `2d 4h`."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


_TIME_KEYS = ("at", "startedAt")
_SHOWN_APART = {"at", "startedAt", "outcome", "attempt"}
_DETAILED = {"status", "statusCode", "durationMs", "handler", "retryAt", "by", "reason", "error"}


def _details(item: dict[str, Any]) -> str:
    """What a history entry says besides its time, outcome and attempt number, in a fixed
    order (jsonb keeps keys in its own): HTTP status, duration, handler, next try, who,
    why, the rest, error."""
    error = item.get("error")
    error = None if error is None else _one_line(str(error))
    parts = []
    status = item.get("status", item.get("statusCode"))
    if isinstance(status, int) and f"HTTP {status}" not in (error or ""):
        parts.append(f"HTTP {status}")
    duration = item.get("durationMs")
    if isinstance(duration, int | float):
        parts.append(f"{duration:g} ms")
    if item.get("handler") is not None:
        parts.append(f"via {item['handler']}")
    if isinstance(item.get("retryAt"), str):
        parts.append(f"next try {_time(item['retryAt'])}")
    if item.get("by") is not None:
        parts.append(f"by {item['by']}")
    if item.get("reason") is not None:
        parts.append(f"reason: {_one_line(str(item['reason']))}")
    for key in sorted(set(item) - _SHOWN_APART - _DETAILED):
        if item[key] is not None:
            parts.append(f"{key}={json.dumps(item[key])}")
    if error:
        parts.append(error)
    return ", ".join(parts)


def _history_row(item: Any) -> tuple[str, ...]:
    if not isinstance(item, dict):
        return ("-", "-", "-", json.dumps(item))
    moment = next((item[k] for k in _TIME_KEYS if isinstance(item.get(k), str)), None)
    attempt = item.get("attempt")
    return (
        _time(moment),
        str(item.get("outcome", "-")),
        "-" if attempt is None else str(attempt),
        _details(item),
    )


def _last_outcome(last: dict[str, Any] | None) -> str:
    if last is None:
        return "-"
    outcome = str(last.get("outcome", "?"))
    status = last.get("status", last.get("statusCode"))
    if isinstance(status, int):
        return f"{outcome} (HTTP {status})"
    if last.get("by") and outcome in admin.OPERATOR_OUTCOMES:
        return f"{outcome} by {last['by']}"
    return outcome


def _print_entries(entries: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(entries, indent=2))
        return
    header = ("ID", "CREATED", "JOB", "STATUS", "ATTEMPTS", "NEXT TRY", "LAST OUTCOME", "ERROR")
    rows = [
        (e["id"], _time(e["createdAt"]), e["jobId"], e["status"], str(e["attempts"]),
         _time(e["dueAt"]), _last_outcome(e["lastOutcome"]), _one_line(e["error"], ERROR_WIDTH))
        for e in entries
    ]  # fmt: skip
    _table(header, rows)
    if not rows:
        print("(no entries)")


def _schedule_line(entry: dict[str, Any]) -> str:
    schedule = entry["schedule"]
    if schedule is None:
        if entry["status"] in ("PENDING", "PROCESSING"):
            return "none yet (a running daemon schedules it within seconds)"
        return "none (finished)"
    if schedule["leaseOwner"] is not None:
        return f"running on {schedule['leaseOwner']}, lease until {_time(schedule['leaseUntil'])}"
    if schedule["active"]:
        return f"due {_time(schedule['dueAt'])}"
    return "not scheduled (finished)"


def _budget_line(entry: dict[str, Any]) -> str:
    """`2 of 5 used; 3 left`, `5 of 5 used since attempt 20; ran out 2026-…`."""
    schedule = entry["schedule"]
    used, left = schedule["attemptsInBudget"], schedule["attemptsLeft"]
    text = f"{used} of {schedule['maxAttempts']} used" if left is not None else f"{used} used"
    if schedule["budgetFrom"]:
        text += f" since attempt {schedule['budgetFrom']}"
    if left is not None and entry["status"] in ("PENDING", "PROCESSING"):
        text += f"; {left} left"
    if schedule["exhaustedAt"] is not None:
        text += f"; ran out {_time(schedule['exhaustedAt'])}"
    return text


def _print_entry(entry: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(entry, indent=2))
        return
    print(f"{entry['id']}: {entry['jobId']}, {entry['status']}")
    print(f"  status:      {entry['status']}")
    print(f"  attempts:    {entry['attempts']}")
    print(f"  created:     {_time(entry['createdAt'])}")
    print(f"  last try:    {_time(entry['lastAttemptAt'])}")
    print(f"  processed:   {_time(entry['processedAt'])}")
    print(f"  updated:     {_time(entry['updatedAt'])}")
    print(f"  schedule:    {_schedule_line(entry)}")
    if entry["schedule"] is not None:
        print(f"  budget:      {_budget_line(entry)}")
    print(f"  error:       {_one_line(entry['error'])}")
    print(f"  event data:  {json.dumps(entry['eventData'])}")
    print(f"  metadata:    {json.dumps(entry['metadata'])}")
    history = entry["history"]
    earlier = entry["earlierAttemptsNotKept"]
    kept = f"the latest {entry['historyKept']} are kept"
    if earlier:
        kept += f"; {earlier} earlier attempt{'s' if earlier != 1 else ''} not kept"
    if not history:
        print("  history:     none yet" + (f" ({kept})" if earlier else ""))
        return
    print(f"  history ({kept}):")
    _table(("TIME", "OUTCOME", "ATTEMPT", "DETAILS"), [_history_row(h) for h in history], "    ")


def _print_stats(stats: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    statuses = list(stats["byStatus"])
    header = ("JOB", *statuses, "TOTAL")
    rows = [
        (job["jobId"], *(str(job["counts"].get(s, 0)) for s in statuses), str(job["total"]))
        for job in stats["jobs"]
    ]
    rows.append(("(all)", *(str(stats["byStatus"][s]) for s in statuses), str(stats["total"])))
    _table(header, rows)
    oldest = stats["oldestPending"]
    if oldest is None:
        print("oldest pending: none")
    else:
        print(
            f"oldest pending: {oldest['id']} ({oldest['jobId']}), created"
            f" {_time(oldest['createdAt'])}, {_age(oldest['ageSeconds'])} ago"
        )
    if stats["attempts"]:
        print("attempts:")
        _table(
            ("ATTEMPTS", "ENTRIES"),
            [(str(a["attempts"]), str(a["entries"])) for a in stats["attempts"]],
            indent="  ",
        )


def _print_routes(table: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(table, indent=2))
        return
    rows = []
    for route in table["routes"]:
        if route["source"] == "route":
            where = route["url"]
        else:
            where = "entry point jobwarden.dlq_handlers"
            if not route["inEffect"]:
                where += " (overridden by the route above)"
        rows.append((route["jobId"], route["source"], where))
    if rows:
        _table(("JOB", "SOURCE", "WHERE"), rows)
    else:
        print("(no routes, no Python handlers)")
    if table["defaultUrl"]:
        print("default URL (JOBWARDEN_DLQ_RETRY_URL): set; every other job's entries go there")
    else:
        print(
            "default URL (JOBWARDEN_DLQ_RETRY_URL): not set; entries of jobs not listed"
            " here stay PENDING"
        )
