"""`jobwarden alerts ...` and `jobwarden deliveries ...`: the same functions as
`/api/alerts` and `/api/deliveries`.

  alerts list [--unresolved] [--limit N] [--json] | show ID [--json] | resolve ID
  alerts test [--channel slack|webhook|email]
  deliveries list [--failed] [--limit N] [--json] | retry ID | retry --all-failed

Bad flags exit 64 naming the flag. An unknown id, or retrying a delivery that has not
failed, exits 1 with a message. `alerts test` needs no database and no daemon: it
exits 0 when every channel took the test, 1 when one did not, 78 when no channel (or
not the one asked for) is configured.
"""

import argparse
import getpass
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from jobwarden import exitcodes
from jobwarden.alerts import actions, testsend, views
from jobwarden.alerts.channels import configured_channels
from jobwarden.alerts.channels.base import Attempt, Outcome
from jobwarden.alerts.testsend import ChannelNotConfigured
from jobwarden.cli.database import open_database
from jobwarden.cli.parser import Commands
from jobwarden.config import Settings
from jobwarden.db.pg import Conn


def _limit(text: str) -> int:
    try:
        return views.parse_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parsers(commands: Commands) -> None:
    alerts = commands.add_parser("alerts", help="alerts and what became of their notifications")
    actions_ = alerts.add_subparsers(dest="alerts_action", required=True, metavar="ACTION")
    listing = actions_.add_parser("list", help="the newest alerts, with each channel's delivery")
    listing.add_argument("--unresolved", action="store_true", help="only open alerts")
    _add_listing_flags(listing)
    show = actions_.add_parser("show", help="one alert with every delivery of it")
    show.add_argument("alert_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="print JSON")
    resolve = actions_.add_parser("resolve", help="resolve an alert (channels hear it)")
    resolve.add_argument("alert_id", metavar="ID")
    test = actions_.add_parser(
        "test", help="send a test notification through each configured channel now"
    )
    test.add_argument("--channel", choices=testsend.CHANNEL_NAMES, help="only this channel")

    deliveries = commands.add_parser("deliveries", help="the outbox: one row per notification")
    dactions = deliveries.add_subparsers(dest="deliveries_action", required=True, metavar="ACTION")
    dlisting = dactions.add_parser("list", help="the most recently changed deliveries")
    dlisting.add_argument("--failed", action="store_true", help="only failed ones")
    _add_listing_flags(dlisting)
    retry = dactions.add_parser("retry", help="send failed deliveries again, now")
    retry.add_argument("delivery_id", metavar="ID", nargs="?")
    retry.add_argument("--all-failed", action="store_true", help="every failed delivery")


def _add_listing_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=_limit,
        default=views.DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N rows, 1 to {views.MAX_LIMIT} (default {views.DEFAULT_LIMIT})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def _fail(message: str, code: int = exitcodes.FAILURE) -> int:
    print(f"jobwarden: {message}", file=sys.stderr)
    return code


async def _list_alerts(conn: Conn, args: argparse.Namespace, _: datetime) -> None:
    alerts = await views.list_alerts(conn, unresolved=args.unresolved, limit=args.limit)
    _print_alerts(alerts, as_json=args.json)


async def _show_alert(conn: Conn, args: argparse.Namespace, _: datetime) -> None:
    alert = await views.show_alert(conn, args.alert_id)
    if alert is None:
        raise actions.UnknownAlert(args.alert_id)
    _print_alert(alert, as_json=args.json)


async def _resolve_alert(conn: Conn, args: argparse.Namespace, now: datetime) -> None:
    changed = await actions.resolve_alert(conn, args.alert_id, now, _resolved_by())
    print(f"{args.alert_id}: {'resolved' if changed else 'was already resolved'}")


async def _list_deliveries(conn: Conn, args: argparse.Namespace, _: datetime) -> None:
    deliveries = await views.list_deliveries(conn, failed_only=args.failed, limit=args.limit)
    _print_deliveries(deliveries, as_json=args.json)


async def _retry_deliveries(conn: Conn, args: argparse.Namespace, now: datetime) -> None:
    count = await actions.retry_deliveries(
        conn, now, delivery_id=args.delivery_id, all_failed=args.all_failed
    )
    print(f"{count} {'delivery' if count == 1 else 'deliveries'} queued again")


Action = Callable[[Conn, argparse.Namespace, datetime], Awaitable[None]]
_ACTIONS: dict[tuple[str, str], Action] = {
    ("alerts", "list"): _list_alerts,
    ("alerts", "show"): _show_alert,
    ("alerts", "resolve"): _resolve_alert,
    ("deliveries", "list"): _list_deliveries,
    ("deliveries", "retry"): _retry_deliveries,
}
_REFUSALS = (actions.UnknownAlert, actions.UnknownDelivery, actions.NotRetryable)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    action = args.alerts_action if args.command == "alerts" else args.deliveries_action
    if (args.command, action) == ("alerts", "test"):
        return await _test(settings, args.channel)
    retrying = (args.command, action) == ("deliveries", "retry")
    if retrying and (args.delivery_id is None) == (not args.all_failed):
        return _fail("deliveries retry: give either a delivery ID or --all-failed", exitcodes.USAGE)
    db = await open_database(settings)
    try:
        async with db.connection() as conn:
            await _ACTIONS[args.command, action](conn, args, datetime.now(UTC))
    except _REFUSALS as exc:
        return _fail(str(exc))
    finally:
        await db.close()
    return exitcodes.OK


def _resolved_by() -> str:
    try:
        return f"jobwarden-cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry
        return "jobwarden-cli"


async def _test(settings: Settings, only: str | None) -> int:
    timeout = aiohttp.ClientTimeout(total=settings.http_client_timeout, connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        channels = configured_channels(settings, http, sandbox=settings.sendgrid_sandbox)
        try:
            results = await testsend.send_test(channels, only)
        except ChannelNotConfigured as exc:
            return _fail(f"alerts test: {exc}", exitcodes.CONFIG)
    width = max(len(name) for name, _ in results)
    for name, attempt in results:
        print(f"{name:<{width}}  {describe_attempt(attempt)}")
    ok = all(attempt.outcome is Outcome.SENT for _, attempt in results)
    return exitcodes.OK if ok else exitcodes.FAILURE


def describe_attempt(attempt: Attempt) -> str:
    """`sent (HTTP 200)`, `failed: HTTP 400: <the service's message>`,
    `will retry (server asks to wait 30s): HTTP 429: ...`, `will retry: <transport error>`."""
    label = {Outcome.SENT: "sent", Outcome.FAILED: "failed", Outcome.RETRY: "will retry"}
    error, status = attempt.error, attempt.status
    details = []
    if status is not None and f"HTTP {status}" not in (error or ""):
        details.append(f"HTTP {status}")
    if attempt.wait is not None:
        details.append(f"server asks to wait {attempt.wait:g}s")
    text = label[attempt.outcome] + (f" ({', '.join(details)})" if details else "")
    if error:
        return f"{text}: {error}"
    return text if status is not None or attempt.outcome is Outcome.SENT else f"{text}: no response"


def _time(iso: str | None) -> str:
    return "-" if iso is None else iso.replace("T", " ")[:19] + "Z"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        print(indent + line.rstrip())


def _summary(deliveries: dict[str, dict[str, Any]]) -> str:
    parts = []
    for channel, d in deliveries.items():
        event = "" if d["event"] == "firing" else views.event_label(d["event"], d["reminder"]) + ":"
        parts.append(f"{channel}:{event}{d['status']}")
    return " ".join(parts) or "-"


def _print_alerts(alerts: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(alerts, indent=2))
        return
    header = ("ID", "CREATED", "SEVERITY", "STATE", "TYPE", "DELIVERIES", "TITLE")
    rows = [
        (a["id"], _time(a["createdAt"]), a["severity"], "resolved" if a["resolved"] else "open",
         a["type"], _summary(a["deliveries"]), a["title"])
        for a in alerts
    ]  # fmt: skip
    _table(header, rows)
    if not rows:
        print("(no alerts)")


def _print_alert(alert: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(alert, indent=2))
        return
    print(f"{alert['id']}: [{alert['severity']}] {alert['title']}")
    state = "open"
    if alert["resolved"]:
        by = alert["metadata"].get("resolvedBy") if isinstance(alert["metadata"], dict) else None
        state = f"resolved {_time(alert['resolvedAt'])}" + (f" by {by}" if by else "")
    print(f"  type:      {alert['type']}")
    print(f"  state:     {state}")
    print(f"  created:   {_time(alert['createdAt'])}")
    print(f"  message:   {alert['message']}")
    print(f"  metadata:  {json.dumps(alert['metadata'])}")
    deliveries = alert["deliveries"]
    if not deliveries:
        print("  deliveries: none yet")
        return
    print("  deliveries:")
    _table(_DELIVERY_HEADER, [_delivery_row(d) for d in deliveries], indent="    ")


_DELIVERY_HEADER = ("CHANNEL", "EVENT", "STATUS", "ATTEMPTS", "NEXT ATTEMPT", "SENT", "HTTP",
                    "ID", "DIGEST", "LAST ERROR")  # fmt: skip


def _delivery_row(d: dict[str, Any]) -> tuple[str, ...]:
    pending = d["status"] == "pending"
    return (
        d["channel"],
        views.event_label(d["event"], d["reminder"]),
        d["status"],
        str(d["attempts"]),
        _time(d["nextAttemptAt"]) if pending else "-",
        _time(d["sentAt"]),
        "-" if d["responseStatus"] is None else str(d["responseStatus"]),
        d["id"],
        d["digestId"] or "-",
        d["lastError"] or "",
    )


def _print_deliveries(deliveries: list[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(deliveries, indent=2))
        return
    header = ("ID", "UPDATED", "ALERT", "CHANNEL", "EVENT", "STATUS", "ATTEMPTS", "HTTP",
              "LAST ERROR")  # fmt: skip
    rows = [
        (d["id"], _time(d["updatedAt"]), d["alertId"], d["channel"],
         views.event_label(d["event"], d["reminder"]), d["status"], str(d["attempts"]),
         "-" if d["responseStatus"] is None else str(d["responseStatus"]), d["lastError"] or "")
        for d in deliveries
    ]  # fmt: skip
    _table(header, rows)
    if not rows:
        print("(no deliveries)")
