"""Slack: one incoming-webhook message per notification, or one digest for several.

`slack_payload()` builds the message as Block Kit: a header with the severity and the
title, the alert's message, its type, job and time, and its id; a digest lists one
line per notification and counts those that did not fit. `text` is always there, the
fallback Slack shows in notifications.

Everything the web app wrote (titles, messages, types, ids) is escaped for mrkdwn:
exactly `&`, `<` and `>`, so no text can mention a channel or forge a link. Block Kit
limits are kept by cutting, never by being rejected: a cut ends in `…`, and falls after
escaping, never inside an entity.

The webhook answers `200 ok` on success; `400 invalid_payload`, `403`, `404` and `410`
are permanent (their plain-text body is the error); `429` carries `Retry-After`.
"""

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import aiohttp

from jobwarden.alerts.channels.base import Attempt, Outcome
from jobwarden.alerts.channels.http import post
from jobwarden.alerts.channels.render import (
    event_label,
    moment,
    one_line,
    severity_label,
    utc_time,
)
from jobwarden.alerts.notification import Event, Notification, severity_rank
from jobwarden.secret import Secret

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_TEXT = 3000
MAX_FALLBACK_TEXT = 3000
MAX_DIGEST_LINE = 300  # one notification's line in a digest
ELLIPSIS = "…"

_SEVERITY_EMOJI = ("\N{INFORMATION SOURCE}\ufe0f", "⚠️", "🔴", "🚨")  # INFO … CRITICAL
_NO_JOB = "—"


def escape(text: str) -> str:
    """mrkdwn's escaping: `&`, `<`, `>` and nothing else."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, ending in `…` when cut; never cuts `&amp;` in half."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    entity = cut.rfind("&")
    if entity != -1 and ";" not in cut[entity:]:
        cut = cut[:entity]
    return cut + ELLIPSIS


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": truncate(one_line(text), limit) or "—"}


def _mrkdwn(escaped: str, limit: int) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": truncate(escaped, limit) or "—"}


def _emoji(notification: Notification) -> str:
    if notification.event is Event.RESOLVED:
        return "✅"
    return _SEVERITY_EMOJI[severity_rank(notification.alert.severity)]


def headline(notification: Notification) -> str:
    """The header's words, unescaped: `🔴 [ERROR] title`, `✅ RESOLVED: title`, …"""
    title = notification.alert.title
    severity = severity_label(notification)
    if notification.event is Event.RESOLVED:
        return f"✅ RESOLVED: {title}"
    if notification.event is Event.REMINDER:
        return f"🔁 REMINDER #{notification.reminder} [{severity}] {title}"
    return f"{_emoji(notification)} [{severity}] {title}"


def _single(notification: Notification) -> dict[str, Any]:
    alert = notification.alert
    fields = [
        ("Type", escape(alert.type)),
        ("Job", escape(alert.job_id) if alert.job_id else _NO_JOB),
        ("Time", utc_time(moment(notification))),
    ]
    message = escape(alert.message) if alert.message.strip() else "_(no message)_"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(headline(notification), MAX_HEADER_TEXT)},
        {"type": "section", "text": _mrkdwn(message, MAX_SECTION_TEXT)},
        {
            "type": "section",
            "fields": [_mrkdwn(f"*{name}*\n{value}", MAX_FIELD_TEXT) for name, value in fields],
        },
        {
            "type": "context",
            "elements": [_mrkdwn(f"Alert `{escape(alert.id)}`", MAX_CONTEXT_TEXT)],
        },
    ]
    text = escape(one_line(headline(notification)))
    if alert.message.strip():
        text += f": {escape(alert.message)}"
    text = truncate(text, MAX_FALLBACK_TEXT)
    return {"text": text, "blocks": blocks}


def _digest_line(notification: Notification) -> str:
    alert = notification.alert
    line = (
        f"{_emoji(notification)} *[{escape(severity_label(notification))}]*"
        f" {escape(event_label(notification))}: {escape(one_line(alert.title))}"
    )
    return f"{truncate(line, MAX_DIGEST_LINE)} (`{truncate(escape(alert.id), 100)}`)"


def _pack(lines: Iterable[str], limit: int, chunks: int) -> tuple[list[str], int]:
    """The lines joined into at most `chunks` texts of at most `limit` characters each
    (a single longer line stays alone), and how many lines went in."""
    packed: list[str] = []
    current: list[str] = []
    size = taken = 0
    for line in lines:
        joined = size + len(line) + (1 if current else 0)
        if current and joined > limit:
            packed.append("\n".join(current))
            current, joined = [], len(line)
        if len(packed) == chunks:
            break
        current.append(line)
        size = joined
        taken += 1
    if current:
        packed.append("\n".join(current))
    return packed, taken


def _more(count: int) -> str:
    return f"…and {count} more"


def _digest(notifications: Sequence[Notification]) -> dict[str, Any]:
    count = len(notifications)
    title = f"{count} alert notifications"
    lines = [_digest_line(n) for n in notifications]
    # header, the sections, and one line for what did not fit
    sections, listed = _pack(lines, MAX_SECTION_TEXT, MAX_BLOCKS - 2)
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(title, MAX_HEADER_TEXT)}]
    blocks += [{"type": "section", "text": _mrkdwn(text, MAX_SECTION_TEXT)} for text in sections]
    if listed < count:
        blocks.append({"type": "section", "text": _mrkdwn(_more(count - listed), 100)})
    room = MAX_FALLBACK_TEXT - len(title) - 1 - len(_more(count)) - 1
    fallback, in_text = _pack(lines, room, 1)
    text = "\n".join([title, *fallback])
    if in_text < count:
        text += "\n" + _more(count - in_text)
    return {"text": truncate(text, MAX_FALLBACK_TEXT), "blocks": blocks}


def slack_payload(notifications: Sequence[Notification]) -> dict[str, Any]:
    """The webhook's JSON body for one notification or a digest of several."""
    if not notifications:
        raise ValueError("nothing to send")
    if len(notifications) == 1:
        return _single(notifications[0])
    return _digest(notifications)


class SlackChannel:
    name: ClassVar[str] = "slack"
    digests: ClassVar[bool] = True

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: Secret,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._url = url
        self._clock = clock

    async def send(self, notifications: Sequence[Notification]) -> Attempt:
        body = json.dumps(slack_payload(notifications), ensure_ascii=False).encode()
        reply = await post(
            self._http,
            self._url.reveal(),
            body,
            {"Content-Type": "application/json; charset=utf-8"},
            secret_url=True,
        )
        if isinstance(reply, Attempt):
            return reply
        message = reply.excerpt()
        if reply.status == 200 and message == "ok":
            return Attempt(Outcome.SENT, reply.status)
        if 300 <= reply.status < 400:
            return reply.failed(f"HTTP {reply.status}: redirect not followed")
        error = message or f"HTTP {reply.status}"
        if reply.status == 200:
            error = f"HTTP 200 without ok: {error}"
        return reply.failed(error, reply.retry_after(self._clock()))
