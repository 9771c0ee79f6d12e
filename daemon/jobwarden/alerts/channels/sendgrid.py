"""Email through SendGrid's v3 mail send: one mail per notification, or one digest.

`mail_body()` builds the request: one personalization with every recipient in `to`,
the sender, a one-line subject (`[ERROR] title`, `[RESOLVED] title`, `[REMINDER]
[ERROR] title`, `[DIGEST] 12 alert notifications`), a `text/plain` body and then a
`text/html` one in which everything shown is HTML-escaped. Both list the severity,
event, type, job, time (UTC), message and alert id; a digest lists its first
`DIGEST_LISTED` notifications and counts the rest. With `sandbox`, SendGrid validates
the mail without delivering it.

`202` (or `200` in sandbox mode) is success, `X-Message-Id` the message's id. Errors
are JSON, `{"errors": [{"message", "field", "help"}]}`: 400, 401, 403, 413 and other 4xx
are permanent; 429 (wait until `X-RateLimit-Reset`, epoch seconds) and 5xx transient.
"""

import html
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import aiohttp

from jobwarden.alerts.channels.base import Attempt, Outcome
from jobwarden.alerts.channels.http import Reply, excerpt, post
from jobwarden.alerts.channels.render import (
    event_label,
    moment,
    one_line,
    severity_label,
    utc_time,
)
from jobwarden.alerts.notification import Event, Notification
from jobwarden.config import MAX_EMAIL_RECIPIENTS, EmailAddress
from jobwarden.secret import Secret

MAX_SUBJECT = 200
DIGEST_LISTED = 200  # notifications a digest lists; the rest are counted
DIGEST_MESSAGE = 500  # characters of each message a digest shows
MAIL_SEND_PATH = "/v3/mail/send"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(notification: Notification) -> str:
    return one_line(notification.alert.title) or "(untitled)"


def subject(notifications: Sequence[Notification]) -> str:
    if len(notifications) > 1:
        return f"[DIGEST] {len(notifications)} alert notifications"
    notification = notifications[0]
    title, severity = _title(notification), severity_label(notification)
    if notification.event is Event.RESOLVED:
        line = f"[RESOLVED] {title}"
    elif notification.event is Event.REMINDER:
        line = f"[REMINDER] [{severity}] {title}"
    else:
        line = f"[{severity}] {title}"
    return _cut(line, MAX_SUBJECT)


def _facts(notification: Notification) -> list[tuple[str, str]]:
    alert = notification.alert
    return [
        ("Severity", severity_label(notification)),
        ("Event", event_label(notification)),
        ("Type", alert.type),
        ("Job", alert.job_id or "—"),
        ("Time", utc_time(moment(notification))),
        ("Alert id", alert.id),
    ]


def _text_entry(notification: Notification, message_limit: int | None) -> str:
    message = notification.alert.message.strip() or "(no message)"
    if message_limit is not None:
        message = _cut(message, message_limit)
    facts = "\n".join(f"{name}: {value}" for name, value in _facts(notification))
    return f"{_title(notification)}\n\n{message}\n\n{facts}"


def _html_entry(notification: Notification, message_limit: int | None) -> str:
    message = notification.alert.message.strip() or "(no message)"
    if message_limit is not None:
        message = _cut(message, message_limit)
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in _facts(notification)
    )
    return (
        f"<h2>{html.escape(_title(notification))}</h2>"
        f"<p style='white-space:pre-wrap'>{html.escape(message)}</p>"
        f"<table>{rows}</table>"
    )


def _bodies(notifications: Sequence[Notification]) -> tuple[str, str]:
    if len(notifications) == 1:
        return _text_entry(notifications[0], None), _html_entry(notifications[0], None)
    listed = notifications[:DIGEST_LISTED]
    rest = len(notifications) - len(listed)
    heading = f"{len(notifications)} alert notifications"
    texts = [heading, *(_text_entry(n, DIGEST_MESSAGE) for n in listed)]
    htmls = [f"<h1>{html.escape(heading)}</h1>", *(_html_entry(n, DIGEST_MESSAGE) for n in listed)]
    if rest:
        texts.append(f"…and {rest} more")
        htmls.append(f"<p>…and {rest} more</p>")
    return "\n\n----\n\n".join(texts), "<hr>".join(htmls)


def _address(address: EmailAddress) -> dict[str, str]:
    name = one_line(address.name.replace(";", " ").replace(",", " ")) if address.name else ""
    return {"email": address.email, "name": name} if name else {"email": address.email}


def _distinct(recipients: Sequence[EmailAddress]) -> list[EmailAddress]:
    seen: dict[str, EmailAddress] = {}
    for address in recipients:
        seen.setdefault(address.email.lower(), address)
    return list(seen.values())


def mail_body(
    notifications: Sequence[Notification],
    sender: EmailAddress,
    recipients: Sequence[EmailAddress],
    sandbox: bool,
) -> dict[str, Any]:
    """The mail send request for one notification or a digest of several."""
    if not notifications:
        raise ValueError("nothing to send")
    text, markup = _bodies(notifications)
    body: dict[str, Any] = {
        "personalizations": [{"to": [_address(a) for a in _distinct(recipients)]}],
        "from": _address(sender),
        "subject": subject(notifications),
        "content": [
            {"type": "text/plain", "value": text},
            {"type": "text/html", "value": f"<!doctype html><html><body>{markup}</body></html>"},
        ],
    }
    if sandbox:
        body["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return body


def sendgrid_error(reply: Reply) -> str:
    """The service's messages, `field: message; …`, else the status and body."""
    try:
        errors = json.loads(reply.text)["errors"]
        messages = [
            f"{error['field']}: {error['message']}" if error.get("field") else str(error["message"])
            for error in errors
        ]
    except (ValueError, KeyError, TypeError):
        return reply.described()
    return excerpt("; ".join(messages)) or reply.described()


class EmailChannel:
    name: ClassVar[str] = "email"
    digests: ClassVar[bool] = True

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        api_key: Secret,
        sender: EmailAddress,
        recipients: Sequence[EmailAddress],
        sandbox: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        distinct = _distinct(recipients)
        if not 1 <= len(distinct) <= MAX_EMAIL_RECIPIENTS:
            raise ValueError(f"email needs 1 to {MAX_EMAIL_RECIPIENTS} distinct recipients")
        self._http = http
        self._url = base_url.rstrip("/") + MAIL_SEND_PATH
        self._api_key = api_key
        self._sender = sender
        self._recipients = tuple(distinct)
        self._sandbox = sandbox
        self._clock = clock

    async def send(self, notifications: Sequence[Notification]) -> Attempt:
        body = mail_body(notifications, self._sender, self._recipients, self._sandbox)
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self._api_key.reveal()}",
        }
        reply = await post(
            self._http, self._url, json.dumps(body).encode(), headers, secret_url=False
        )
        if isinstance(reply, Attempt):
            return reply
        if reply.success:
            return Attempt(Outcome.SENT, reply.status, message_id=reply.headers.get("X-Message-Id"))
        if 300 <= reply.status < 400:
            return reply.failed(f"HTTP {reply.status}: redirect not followed")
        return reply.failed(sendgrid_error(reply), self._wait(reply))

    def _wait(self, reply: Reply) -> float | None:
        now = self._clock()
        if reply.status == 429:
            reset = reply.headers.get("X-RateLimit-Reset", "").strip()
            if reset.isdigit():
                return max(0.0, int(reset) - now)
        return reply.retry_after(now)
