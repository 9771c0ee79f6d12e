"""Each channel against a local fake of its service, the failures of its contract included."""

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

from jobwarden.alerts.channels import EmailChannel, SlackChannel, WebhookChannel
from jobwarden.alerts.channels.base import ERROR_EXCERPT, Attempt, Channel, Outcome
from jobwarden.alerts.notification import AlertView, Event, Notification
from jobwarden.config import EmailAddress
from jobwarden.secret import Secret
from tests.integration.fakes import FakeService, SendGridFake, SlackFake, WebhookFake
from tests.integration.fakes.sendgrid import UNAUTHORIZED
from tests.integration.fakes.slack import block_problems
from tests.integration.fakes.webhook import verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SENDER = EmailAddress("jobwarden@example.com", "Jobwarden")
TEAM = (EmailAddress("ops@example.com", "Ops"), EmailAddress("oncall@example.com"))
CREATED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Clock:
    """The time the channel and the fake both read; tests move it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def note(alert_id: str = "alert_1", key: str = "delivery_1", **changes: str) -> Notification:
    alert = AlertView(
        id=alert_id,
        type="job_failed",
        severity=changes.get("severity", "ERROR"),
        title=changes.get("title", "Nightly backup failed"),
        message=changes.get("message", "exit status 1"),
        created_at=CREATED,
        metadata={"jobId": "job_42"},
    )
    return Notification(key=key, alert=alert, event=Event.FIRING)


def many(count: int, title: str = "Nightly backup failed") -> list[Notification]:
    return [note(f"alert_{i}", f"delivery_{i}", title=title) for i in range(count)]


def assert_no_secret(attempt: Attempt, url: str) -> None:
    """Neither the URL nor its path shows in what the attempt reports."""
    path = url.split("://", 1)[1].split("/", 1)[1]
    assert url not in (attempt.error or "")
    assert path not in (attempt.error or "")
    assert path.rsplit("/", 1)[-1] not in (attempt.error or "")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
async def impatient() -> AsyncIterator[aiohttp.ClientSession]:
    """A session that gives up after 0.3 s, for servers that never answer."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        yield session


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def slack() -> AsyncIterator[SlackFake]:
    async with SlackFake() as fake:
        yield fake


@pytest.fixture
async def receiver(clock: Clock) -> AsyncIterator[WebhookFake]:
    async with WebhookFake(secret=SECRET, clock=clock) as fake:
        yield fake


@pytest.fixture
async def sendgrid(clock: Clock) -> AsyncIterator[SendGridFake]:
    async with SendGridFake(clock=clock) as fake:
        yield fake


def slack_channel(http: aiohttp.ClientSession, fake: SlackFake, clock: Clock) -> SlackChannel:
    return SlackChannel(http, Secret(fake.webhook_url), clock=clock)


def webhook_channel(
    http: aiohttp.ClientSession, fake: WebhookFake, clock: Clock, secret: str | None = SECRET
) -> WebhookChannel:
    return WebhookChannel(
        http, Secret(fake.hook_url), Secret(secret) if secret else None, clock=clock
    )


def email_channel(
    http: aiohttp.ClientSession,
    fake: SendGridFake,
    clock: Clock,
    *,
    sandbox: bool = False,
    api_key: str | None = None,
    sender: EmailAddress = SENDER,
) -> EmailChannel:
    key = Secret(api_key or fake.api_key)
    return EmailChannel(http, fake.base_url, key, sender, TEAM, sandbox, clock=clock)


# --- Slack -----------------------------------------------------------------------------


async def test_slack_message_arrives_as_valid_block_kit(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock
) -> None:
    attempt = await slack_channel(http, slack, clock).send([note(title="Backup <failed> & more")])
    assert attempt == Attempt(Outcome.SENT, 200)
    [message] = await slack.wait_for(1)
    assert slack.problems == []
    assert message.headers["content-type"].startswith("application/json")
    assert message.json["blocks"][0]["text"]["text"] == "🔴 [ERROR] Backup <failed> & more"
    assert "Backup &lt;failed&gt; &amp; more" in message.json["text"]


async def test_slack_digest_of_many_long_alerts_is_one_valid_message(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock
) -> None:
    attempt = await slack_channel(http, slack, clock).send(many(500, title="T" * 1000))
    assert attempt.outcome is Outcome.SENT
    [message] = await slack.wait_for(1)
    assert len(message.json["blocks"]) == 50
    assert message.json["blocks"][-1]["text"]["text"].startswith("…and ")


async def test_slack_fake_rejects_what_slack_would(
    http: aiohttp.ClientSession, slack: SlackFake
) -> None:
    too_long = {
        "text": "x",
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
    }
    async with http.post(slack.webhook_url, json=too_long) as resp:
        assert (resp.status, await resp.text()) == (400, "invalid_payload")
    async with http.post(slack.webhook_url, json={"blocks": []}) as resp:
        assert resp.status == 400
    assert slack.problems == [
        block_problems(too_long),
        ["text: required (the notification fallback)"],
    ]
    assert slack.messages == []


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (410, "channel_is_archived"),
        (401, "invalid_token"),
    ],
)
async def test_slack_permanent_errors_fail_with_slacks_message(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock, status: int, body: str
) -> None:
    slack.fail_next(status=status, body=body)
    attempt = await slack_channel(http, slack, clock).send([note()])
    assert attempt == Attempt(Outcome.FAILED, status, body)


async def test_slack_429_waits_as_long_as_retry_after_says(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock
) -> None:
    channel = slack_channel(http, slack, clock)
    slack.fail_next(status=429, body="rate_limited", headers={"Retry-After": "30"})
    assert await channel.send([note()]) == Attempt(Outcome.RETRY, 429, "rate_limited", 30.0)
    later = datetime.fromtimestamp(clock.now, UTC) + timedelta(seconds=45)
    slack.fail_next(status=429, headers={"Retry-After": format_datetime(later, usegmt=True)})
    attempt = await channel.send([note()])
    assert (attempt.outcome, attempt.wait) == (Outcome.RETRY, 45.0)


async def test_slack_own_rate_limit_is_reported_with_its_wait(
    http: aiohttp.ClientSession, clock: Clock
) -> None:
    async with SlackFake(rate_limit=(2, 60)) as limited:
        channel = slack_channel(http, limited, clock)
        outcomes = [(await channel.send([note()])).outcome for _ in range(2)]
        limited_attempt = await channel.send([note()])
        assert outcomes == [Outcome.SENT, Outcome.SENT]
        assert limited_attempt.outcome is Outcome.RETRY
        assert limited_attempt.wait is not None
        assert 0 < limited_attempt.wait <= 60
        assert limited.max_in_window(60) == 2


async def test_slack_down_for_a_while_then_back(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock
) -> None:
    channel = slack_channel(http, slack, clock)
    slack.go_down(status=500, body="rollup_error")
    down = [await channel.send([note()]) for _ in range(3)]
    assert down == [Attempt(Outcome.RETRY, 500, "rollup_error")] * 3
    slack.come_back()
    assert (await channel.send([note()])).outcome is Outcome.SENT
    assert len(await slack.wait_for(1)) == 1
    assert len(slack.requests) == 4


async def test_slack_200_without_ok_is_not_success(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock
) -> None:
    slack.fail_next(status=200, body="<html>captive portal</html>")
    attempt = await slack_channel(http, slack, clock).send([note()])
    assert attempt.outcome is Outcome.RETRY
    assert "captive portal" in (attempt.error or "")


@pytest.mark.parametrize("status", [408, 502, 503])
async def test_slack_transient_statuses_retry(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock, status: int
) -> None:
    slack.fail_next(status=status)
    attempt = await slack_channel(http, slack, clock).send([note()])
    assert (attempt.outcome, attempt.status) == (Outcome.RETRY, status)


async def test_a_fake_wakes_its_waiter_when_messages_arrive(
    http: aiohttp.ClientSession, slack: SlackFake, clock: Clock
) -> None:
    waiting = asyncio.create_task(slack.wait_for(2))
    channel = slack_channel(http, slack, clock)
    for _ in range(2):
        await channel.send([note()])
    assert len(await waiting) == 2
    with pytest.raises(TimeoutError):
        await slack.wait_for(3, timeout=0.05)


# --- Webhook ---------------------------------------------------------------------------


async def test_webhook_delivery_is_signed_and_carries_the_alert(
    http: aiohttp.ClientSession, receiver: WebhookFake, clock: Clock
) -> None:
    notification = note()
    attempt = await webhook_channel(http, receiver, clock).send([notification])
    assert attempt == Attempt(Outcome.SENT, 204)
    [message] = await receiver.wait_for(1)
    assert receiver.problems == []
    assert message.headers["webhook-id"] == "delivery_1"
    assert message.headers["webhook-timestamp"] == "1800000000"
    assert message.headers["content-type"] == "application/json"
    assert message.json == {
        "type": "alert.firing",
        "timestamp": "2027-01-15T08:00:00.000Z",
        "data": notification.alert.as_data(),
    }


async def test_webhook_without_a_secret_is_unsigned(
    http: aiohttp.ClientSession, clock: Clock
) -> None:
    async with WebhookFake(status=200, clock=clock) as open_receiver:
        attempt = await webhook_channel(http, open_receiver, clock, secret=None).send([note()])
        assert attempt == Attempt(Outcome.SENT, 200)
        [message] = await open_receiver.wait_for(1)
        assert "webhook-signature" not in message.headers


async def test_webhook_signed_with_another_secret_is_refused(
    http: aiohttp.ClientSession, receiver: WebhookFake, clock: Clock
) -> None:
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    attempt = await webhook_channel(http, receiver, clock, secret=other).send([note()])
    assert attempt == Attempt(Outcome.FAILED, 401, "HTTP 401: invalid signature")
    assert receiver.messages == []


async def test_webhook_retry_keeps_the_id_and_signs_anew(
    http: aiohttp.ClientSession, receiver: WebhookFake, clock: Clock
) -> None:
    channel = webhook_channel(http, receiver, clock)
    receiver.fail_next(status=503, body="maintenance", headers={"Retry-After": "7"})
    first = await channel.send([note()])
    assert first == Attempt(Outcome.RETRY, 503, "HTTP 503: maintenance", 7.0)
    clock.now += 10
    assert (await channel.send([note()])).outcome is Outcome.SENT
    tries = await receiver.wait_for_requests(2)
    assert [r.headers["webhook-id"] for r in tries] == ["delivery_1", "delivery_1"]
    assert [r.headers["webhook-timestamp"] for r in tries] == ["1800000000", "1800000010"]
    for r in tries:
        assert verify(
            SECRET,
            r.headers["webhook-id"],
            r.headers["webhook-timestamp"],
            r.body,
            r.headers["webhook-signature"],
        )
    assert receiver.ids == ["delivery_1"]


@pytest.mark.parametrize(
    ("status", "outcome", "wait"),
    [
        (429, Outcome.RETRY, 12.0),
        (502, Outcome.RETRY, 12.0),
        (503, Outcome.RETRY, 12.0),
        (504, Outcome.RETRY, 12.0),
        (500, Outcome.RETRY, None),
        (408, Outcome.RETRY, None),
        (410, Outcome.FAILED, None),
        (400, Outcome.FAILED, None),
        (404, Outcome.FAILED, None),
        (422, Outcome.FAILED, None),
    ],
)
async def test_webhook_statuses_follow_the_contract(
    http: aiohttp.ClientSession,
    receiver: WebhookFake,
    clock: Clock,
    status: int,
    outcome: Outcome,
    wait: float | None,
) -> None:
    headers = {"Retry-After": "12"} if wait else {}
    receiver.fail_next(status=status, body=f"receiver says {status}", headers=headers)
    attempt = await webhook_channel(http, receiver, clock).send([note()])
    assert attempt == Attempt(outcome, status, f"HTTP {status}: receiver says {status}", wait)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_webhook_any_2xx_is_success(
    http: aiohttp.ClientSession, clock: Clock, status: int
) -> None:
    async with WebhookFake(secret=SECRET, status=status, clock=clock) as fake:
        attempt = await webhook_channel(http, fake, clock).send([note()])
        assert attempt == Attempt(Outcome.SENT, status)


async def test_webhook_error_text_is_an_excerpt(
    http: aiohttp.ClientSession, receiver: WebhookFake, clock: Clock
) -> None:
    receiver.fail_next(status=400, body="<html>\n" + "why " * 50_000 + "</html>")
    attempt = await webhook_channel(http, receiver, clock).send([note()])
    assert attempt.outcome is Outcome.FAILED
    assert attempt.error is not None
    assert attempt.error.startswith("HTTP 400: <html> why why")
    assert attempt.error.endswith("…")
    assert len(attempt.error) <= ERROR_EXCERPT + len("HTTP 400: ")


async def test_webhook_error_never_shows_the_secret_url(
    http: aiohttp.ClientSession, receiver: WebhookFake, clock: Clock
) -> None:
    wrong = receiver.url("/hooks/sk_live_5f8d0c2b9a7e4e1bb1d3")
    channel = WebhookChannel(http, Secret(wrong), Secret(SECRET), clock=clock)
    attempt = await channel.send([note()])
    assert (attempt.outcome, attempt.status) == (Outcome.FAILED, 404)
    assert attempt.error == "HTTP 404: Not Found: no hook at ***"
    assert_no_secret(attempt, wrong)


async def test_webhook_sends_one_notification_at_a_time(
    http: aiohttp.ClientSession, receiver: WebhookFake, clock: Clock
) -> None:
    with pytest.raises(ValueError, match="one notification at a time"):
        await webhook_channel(http, receiver, clock).send(many(2))
    assert receiver.requests == []


# --- Email -----------------------------------------------------------------------------


async def test_email_is_accepted_with_a_message_id(
    http: aiohttp.ClientSession, sendgrid: SendGridFake, clock: Clock
) -> None:
    attempt = await email_channel(http, sendgrid, clock).send([note(title="<b>Backup</b>")])
    assert attempt == Attempt(Outcome.SENT, 202, message_id=sendgrid.message_ids[0])
    [mail] = await sendgrid.wait_for(1)
    assert sendgrid.problems == []
    assert mail.json["subject"] == "[ERROR] <b>Backup</b>"
    assert [to["email"] for to in mail.json["personalizations"][0]["to"]] == [
        "ops@example.com",
        "oncall@example.com",
    ]


async def test_email_digest_is_one_valid_mail(
    http: aiohttp.ClientSession, sendgrid: SendGridFake, clock: Clock
) -> None:
    attempt = await email_channel(http, sendgrid, clock).send(many(250))
    assert attempt.outcome is Outcome.SENT
    [mail] = await sendgrid.wait_for(1)
    assert mail.json["subject"] == "[DIGEST] 250 alert notifications"
    assert "and 50 more" in mail.json["content"][0]["value"]


async def test_email_sandbox_is_validated_not_sent(
    http: aiohttp.ClientSession, sendgrid: SendGridFake, clock: Clock
) -> None:
    attempt = await email_channel(http, sendgrid, clock, sandbox=True).send([note()])
    assert attempt == Attempt(Outcome.SENT, 200)
    [mail] = await sendgrid.wait_for(1)
    assert mail.json["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert sendgrid.message_ids == []


async def test_sendgrid_fake_rejects_what_sendgrid_would(
    http: aiohttp.ClientSession, sendgrid: SendGridFake
) -> None:
    mail = {
        "personalizations": [{"to": [{"email": "a@example.com"}, {"email": "A@example.com"}]}],
        "from": {"email": "jobwarden@example.com", "name": "Jobs, Inc."},
        "subject": "s",
        "content": [
            {"type": "text/html", "value": "<p>h</p>"},
            {"type": "text/plain", "value": "t"},
        ],
    }
    headers = {"Authorization": f"Bearer {sendgrid.api_key}"}
    async with http.post(sendgrid.url("/v3/mail/send"), json=mail, headers=headers) as resp:
        assert resp.status == 400
        errors = (await resp.json())["errors"]
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            resp.headers
        )
    assert [error["field"] for error in errors] == ["personalizations.0", None, "content"]
    mail["mail_settings"] = {"sandbox_mode": {"enable": "true"}}
    async with http.post(sendgrid.url("/v3/mail/send"), json=mail, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["field"] == "mail_settings.sandbox_mode.enable"
    assert sendgrid.messages == []


async def test_email_with_a_wrong_key_fails_with_sendgrids_message(
    http: aiohttp.ClientSession, sendgrid: SendGridFake, clock: Clock
) -> None:
    attempt = await email_channel(http, sendgrid, clock, api_key="SG.revoked").send([note()])
    assert attempt == Attempt(Outcome.FAILED, 401, UNAUTHORIZED)


async def test_email_sendgrid_rejects_names_the_field(
    http: aiohttp.ClientSession, sendgrid: SendGridFake, clock: Clock
) -> None:
    channel = email_channel(http, sendgrid, clock, sender=EmailAddress("not-an-address"))
    attempt = await channel.send([note()])
    assert attempt == Attempt(Outcome.FAILED, 400, "from.email: 'not-an-address' is not a 'email'")


@pytest.mark.parametrize(
    ("status", "field"), [(400, "subject"), (403, None), (413, None), (404, None)]
)
async def test_email_permanent_errors_fail_with_sendgrids_message(
    http: aiohttp.ClientSession,
    sendgrid: SendGridFake,
    clock: Clock,
    status: int,
    field: str | None,
) -> None:
    sendgrid.error_next(status=status, message=f"refused with {status}", field=field)
    attempt = await email_channel(http, sendgrid, clock).send([note()])
    shown = f"{field}: refused with {status}" if field else f"refused with {status}"
    assert attempt == Attempt(Outcome.FAILED, status, shown)


async def test_email_429_waits_until_the_rate_limit_resets(
    http: aiohttp.ClientSession, sendgrid: SendGridFake, clock: Clock
) -> None:
    sendgrid.rate_limit_next(reset_in=42)
    attempt = await email_channel(http, sendgrid, clock).send([note()])
    assert attempt == Attempt(Outcome.RETRY, 429, "too many requests", 42.0)


async def test_email_past_sendgrids_own_limit_waits_for_the_next_minute(
    http: aiohttp.ClientSession, clock: Clock
) -> None:
    async with SendGridFake(clock=clock, limit=2) as limited:
        channel = email_channel(http, limited, clock)
        outcomes = [(await channel.send([note()])).outcome for _ in range(2)]
        assert outcomes == [Outcome.SENT, Outcome.SENT]
        clock.now += 15
        assert await channel.send([note()]) == Attempt(
            Outcome.RETRY, 429, "too many requests", 45.0
        )
        clock.now += 45
        assert (await channel.send([note()])).outcome is Outcome.SENT


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_email_server_errors_retry(
    http: aiohttp.ClientSession, sendgrid: SendGridFake, clock: Clock, status: int
) -> None:
    sendgrid.error_next(status=status, message="internal error")
    attempt = await email_channel(http, sendgrid, clock).send([note()])
    assert attempt == Attempt(Outcome.RETRY, status, "internal error")


# --- Every channel ---------------------------------------------------------------------


def _slack_at(http: aiohttp.ClientSession, url: str, clock: Clock) -> Channel:
    return SlackChannel(http, Secret(url), clock=clock)


def _webhook_at(http: aiohttp.ClientSession, url: str, clock: Clock) -> Channel:
    return WebhookChannel(http, Secret(url), Secret(SECRET), clock=clock)


def _email_at(http: aiohttp.ClientSession, url: str, clock: Clock) -> Channel:
    base = url.removesuffix("/v3/mail/send")
    return EmailChannel(http, base, Secret("SG.fake-key.0123456789"), SENDER, TEAM, False, clock)


CHANNELS: dict[str, Callable[[aiohttp.ClientSession, str, Clock], Channel]] = {
    "slack": _slack_at,
    "webhook": _webhook_at,
    "email": _email_at,
}


def _fake_and_url(
    kind: str, slack: SlackFake, receiver: WebhookFake, sendgrid: SendGridFake
) -> tuple[FakeService, str]:
    if kind == "slack":
        return slack, slack.webhook_url
    if kind == "webhook":
        return receiver, receiver.hook_url
    return sendgrid, sendgrid.url("/v3/mail/send")


@pytest.mark.parametrize("kind", CHANNELS)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirects_are_failures_never_followed(
    http: aiohttp.ClientSession,
    slack: SlackFake,
    receiver: WebhookFake,
    sendgrid: SendGridFake,
    clock: Clock,
    kind: str,
    status: int,
) -> None:
    fake, url = _fake_and_url(kind, slack, receiver, sendgrid)
    fake.fail_next(status=status, headers={"Location": url})  # following would succeed
    attempt = await CHANNELS[kind](http, url, clock).send([note()])
    assert attempt == Attempt(Outcome.FAILED, status, f"HTTP {status}: redirect not followed")
    assert len(fake.requests) == 1
    assert fake.messages == []


@pytest.mark.parametrize("kind", CHANNELS)
async def test_a_server_that_never_answers_is_a_timeout_to_retry(
    impatient: aiohttp.ClientSession,
    slack: SlackFake,
    receiver: WebhookFake,
    sendgrid: SendGridFake,
    clock: Clock,
    kind: str,
) -> None:
    fake, url = _fake_and_url(kind, slack, receiver, sendgrid)
    fake.hang_next()
    attempt = await CHANNELS[kind](impatient, url, clock).send([note()])
    assert attempt.outcome is Outcome.RETRY
    assert attempt.status is None
    assert attempt.error is not None
    assert "timed out" in attempt.error
    assert len(fake.requests) == 1
    assert_no_secret(attempt, url)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("kind", CHANNELS)
async def test_a_refused_connection_is_retried_without_showing_the_url(
    http: aiohttp.ClientSession, clock: Clock, kind: str
) -> None:
    base = f"http://127.0.0.1:{_closed_port()}"
    path = "/v3/mail/send" if kind == "email" else "/services/T0SECRET/B0SECRET/xoxb5f8d0c2b9a7e"
    url = base + path
    attempt = await CHANNELS[kind](http, url, clock).send([note()])
    assert attempt == Attempt(
        Outcome.RETRY, None, "ClientConnectorError: cannot connect (Connection refused)"
    )
    assert_no_secret(attempt, url)
