"""A fake SendGrid v3 mail send that validates every request it is given.

`SendGridFake(api_key=..., clock=time.time, limit=600)`: `base_url` is what the
daemon's `JOBWARDEN_SENDGRID_BASE_URL` would be; `POST /v3/mail/send` needs
`Authorization: Bearer <api_key>` (else `401`), and a body that passes SendGrid's own
OpenAPI schema (the copy beside this file, `mail_problems()`) and the rules of
contracts.md the schema does not carry: else `400` with SendGrid's error JSON, the
problems kept in `problems`. A valid mail is answered `202` with `X-Message-Id`, or
`200` in sandbox mode. Every answer carries `X-RateLimit-Limit`, `-Remaining` and
`-Reset` (epoch seconds, the end of the current minute); past `limit` mails in a
minute the answer is `429`.

`rate_limit_next(n, reset_in=…)` and `error_next(n, status, message, field=…)` script
SendGrid's own error answers.
"""

import json
import secrets
import time
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.integration.fakes.server import FakeService, Received

SPEC = Path(__file__).with_name("sendgrid-mail-v3.openapi.json")
SPEC_URI = "urn:sendgrid-mail-v3"
REQUEST_SCHEMA = "/components/requestBodies/PostMailSend/content/application~1json/schema"
MAX_RECIPIENTS = 1000
UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"


@cache
def _validator() -> Draft202012Validator:
    spec = json.loads(SPEC.read_text(encoding="utf-8"))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
    return Draft202012Validator(
        {"$ref": f"{SPEC_URI}#{REQUEST_SCHEMA}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _addresses(personalization: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        address
        for kind in ("to", "cc", "bcc")
        for address in personalization.get(kind) or []
        if isinstance(address, dict)
    ]


def _contract_problems(mail: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    problems: list[tuple[str | None, str]] = []
    personalizations = mail.get("personalizations") or []
    if not personalizations:
        problems.append(("personalizations", "At least one personalization is required."))
    total = 0
    for i, personalization in enumerate(personalizations):
        addresses = _addresses(personalization)
        total += len(addresses)
        if not personalization.get("to"):
            problems.append((f"personalizations.{i}.to", "The to array is required."))
        emails = [str(a.get("email", "")).lower() for a in addresses]
        if len(set(emails)) != len(emails):
            problems.append(
                (
                    f"personalizations.{i}",
                    "Each email address in the personalization block should be unique"
                    " between to, cc, and bcc.",
                )
            )
    if total > MAX_RECIPIENTS:
        problems.append(("personalizations", f"At most {MAX_RECIPIENTS} recipients in total."))
    named = [mail.get("from"), mail.get("reply_to")]
    named += [a for p in personalizations for a in _addresses(p)]
    for address in named:
        if isinstance(address, dict) and any(c in str(address.get("name", "")) for c in ";,"):
            problems.append((None, "A name may not contain ';' or ','."))
    subjects = [mail.get("subject")] + [p.get("subject") for p in personalizations]
    if not any(isinstance(s, str) and s.strip() for s in subjects):
        problems.append(("subject", "The subject is required."))
    content = mail.get("content") or []
    if not content:
        problems.append(("content", "Unless a template is used, content is required."))
    types = [item.get("type") for item in content if isinstance(item, dict)]
    if "text/plain" in types and types[0] != "text/plain":
        problems.append(("content", "text/plain must come first, then text/html."))
    if any(isinstance(item, dict) and not item.get("value") for item in content):
        problems.append(("content.value", "Content values must be non-empty strings."))
    sandbox = (mail.get("mail_settings") or {}).get("sandbox_mode", {}).get("enable")
    if sandbox is not None and not isinstance(sandbox, bool):
        problems.append(("mail_settings.sandbox_mode.enable", "Must be a boolean."))
    return problems


def mail_problems(mail: Any) -> list[tuple[str | None, str]]:
    """(field, message) for everything SendGrid would reject in a mail send body."""
    schema_errors = sorted(_validator().iter_errors(mail), key=lambda e: list(e.absolute_path))
    problems: list[tuple[str | None, str]] = [
        (".".join(map(str, error.absolute_path)) or None, error.message) for error in schema_errors
    ]
    if problems or not isinstance(mail, dict):
        return problems
    return _contract_problems(mail)


def errors_json(problems: list[tuple[str | None, str]]) -> str:
    return json.dumps(
        {
            "errors": [
                {"message": message, "field": field, "help": None} for field, message in problems
            ]
        }
    )


class SendGridFake(FakeService):
    def __init__(
        self,
        *,
        api_key: str = "SG.fake-key.0123456789",
        clock: Callable[[], float] = time.time,
        limit: int = 600,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.clock = clock
        self.limit = limit
        self.problems: list[list[tuple[str | None, str]]] = []
        self.message_ids: list[str] = []
        self._sent_in_minute: dict[int, int] = {}

    @property
    def base_url(self) -> str:
        return self.url("/").rstrip("/")

    def _reset(self) -> int:
        return (int(self.clock()) // 60 + 1) * 60

    def every_response_headers(self) -> Mapping[str, str]:
        used = self._sent_in_minute.get(self._reset(), 0)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - used)),
            "X-RateLimit-Reset": str(self._reset()),
        }

    def error_next(
        self, n: int = 1, *, status: int, message: str, field: str | None = None
    ) -> None:
        self.fail_next(
            n,
            status=status,
            body=errors_json([(field, message)]),
            headers={"Content-Type": "application/json"},
        )

    def rate_limit_next(self, n: int = 1, *, reset_in: int = 30) -> None:
        self.fail_next(
            n,
            status=429,
            body=errors_json([(None, "too many requests")]),
            headers={
                "Content-Type": "application/json",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(self.clock()) + reset_in),
            },
        )

    def _error(self, status: int, problems: list[tuple[str | None, str]]) -> web.Response:
        return web.Response(
            status=status, text=errors_json(problems), content_type="application/json"
        )

    async def handle(self, request: web.Request, received: Received) -> web.Response:
        if request.path != "/v3/mail/send":
            return self._error(404, [(None, "resource not found")])
        if request.method != "POST":
            return self._error(405, [(None, "method not allowed")])
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, [(None, UNAUTHORIZED)])
        if received.json is None:
            return self._error(400, [(None, "Bad Request")])
        problems = mail_problems(received.json)
        if problems:
            self.problems.append(problems)
            return self._error(400, problems)
        window = self._reset()
        if self._sent_in_minute.get(window, 0) >= self.limit:
            return self._error(429, [(None, "too many requests")])
        self._sent_in_minute[window] = self._sent_in_minute.get(window, 0) + 1
        if received.json.get("mail_settings", {}).get("sandbox_mode", {}).get("enable"):
            return web.Response(status=200)
        message_id = secrets.token_urlsafe(16)
        self.message_ids.append(message_id)
        return web.Response(status=202, headers={"X-Message-Id": message_id})
