"""What each channel would send: Slack's blocks, SendGrid's mail, the webhook's signature."""

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from jobwarden.alerts.channels import configured_channels
from jobwarden.alerts.channels.http import hide_url, retry_after
from jobwarden.alerts.channels.sendgrid import mail_body
from jobwarden.alerts.channels.slack import escape, slack_payload, truncate
from jobwarden.alerts.channels.webhook import sign, webhook_body
from jobwarden.alerts.notification import AlertView, Event, Notification
from jobwarden.config import EmailAddress, load_settings
from tests.integration.fakes.sendgrid import mail_problems
from tests.integration.fakes.slack import block_problems
from tests.integration.fakes.webhook import verify

CREATED = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RESOLVED = CREATED + timedelta(minutes=42, seconds=5)
SENDER = EmailAddress("jobwarden@example.com", "Jobwarden")
TEAM = (EmailAddress("ops@example.com", "Ops"), EmailAddress("oncall@example.com"))

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def note(
    *,
    title: str = "Nightly backup failed",
    message: str = "exit status 1",
    severity: str = "ERROR",
    event: Event = Event.FIRING,
    reminder: int = 0,
    alert_id: str = "alert_1",
    job: str | None = "job_42",
    key: str = "delivery_1",
) -> Notification:
    alert = AlertView(
        id=alert_id,
        type="job_failed",
        severity=severity,
        title=title,
        message=message,
        created_at=CREATED,
        resolved=event is Event.RESOLVED,
        resolved_at=RESOLVED if event is Event.RESOLVED else None,
        metadata={"jobId": job} if job else {},
    )
    return Notification(key=key, alert=alert, event=event, reminder=reminder)


def many(count: int, **kwargs: Any) -> list[Notification]:
    return [note(alert_id=f"alert_{i}", key=f"delivery_{i}", **kwargs) for i in range(count)]


def mrkdwn_texts(payload: dict[str, Any]) -> list[str]:
    texts = [payload["text"]]
    for block in payload["blocks"]:
        items = [block.get("text"), *block.get("fields", []), *block.get("elements", [])]
        texts += [item["text"] for item in items if item and item["type"] == "mrkdwn"]
    return texts


def header(payload: dict[str, Any]) -> str:
    block = payload["blocks"][0]
    assert block["type"] == "header"
    assert block["text"]["type"] == "plain_text"
    text: str = block["text"]["text"]
    return text


# --- Slack -----------------------------------------------------------------------------


def test_mrkdwn_escapes_exactly_ampersand_and_angle_brackets() -> None:
    text = "a & b < c > d \"q\" 'x' *bold* _i_ `code` ~s~ &amp;"
    assert escape(text) == "a &amp; b &lt; c &gt; d \"q\" 'x' *bold* _i_ `code` ~s~ &amp;amp;"


def test_user_text_cannot_mention_or_link_in_slack() -> None:
    payload = slack_payload(
        [note(title="<!channel> & <https://evil.example|click>", message="<@U123> ping & more")]
    )
    assert block_problems(payload) == []
    for text in mrkdwn_texts(payload):
        assert "<" not in text
        assert ">" not in text
    assert "&lt;@U123&gt; ping &amp; more" in payload["blocks"][1]["text"]["text"]
    # plain_text is shown as written: no escaping there
    assert header(payload) == "🔴 [ERROR] <!channel> & <https://evil.example|click>"


@pytest.mark.parametrize("limit", range(2, 40))
def test_truncation_never_cuts_an_entity_in_half(limit: int) -> None:
    escaped = escape("&<>" * 50)
    cut = truncate(escaped, limit)
    assert len(cut) <= limit
    assert cut.endswith("…")
    body = cut.removesuffix("…")
    assert body.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "") == ""


def test_short_text_is_not_truncated() -> None:
    assert truncate("exactly", 7) == "exactly"


@pytest.mark.parametrize(
    ("event", "severity", "reminder", "expected"),
    [
        (Event.FIRING, "ERROR", 0, "🔴 [ERROR] Nightly backup failed"),
        (Event.FIRING, "critical", 0, "🚨 [CRITICAL] Nightly backup failed"),
        (Event.FIRING, "WARNING", 0, "⚠️ [WARNING] Nightly backup failed"),
        (Event.FIRING, "INFO", 0, "\N{INFORMATION SOURCE}\ufe0f [INFO] Nightly backup failed"),
        (Event.RESOLVED, "ERROR", 0, "✅ RESOLVED: Nightly backup failed"),
        (Event.REMINDER, "WARNING", 3, "🔁 REMINDER #3 [WARNING] Nightly backup failed"),
    ],
)
def test_slack_header_says_severity_event_and_title(
    event: Event, severity: str, reminder: int, expected: str
) -> None:
    payload = slack_payload([note(event=event, severity=severity, reminder=reminder)])
    assert header(payload) == expected
    assert "Nightly backup failed" in payload["text"]


def test_slack_fields_show_type_job_and_the_moment_of_the_event() -> None:
    firing = slack_payload([note()])
    fields = [field["text"] for field in firing["blocks"][2]["fields"]]
    assert fields == ["*Type*\njob_failed", "*Job*\njob_42", "*Time*\n2026-11-26 12:00:00 UTC"]
    assert firing["blocks"][3]["type"] == "context"
    assert "alert_1" in firing["blocks"][3]["elements"][0]["text"]

    resolved = slack_payload([note(event=Event.RESOLVED, job=None)])
    fields = [field["text"] for field in resolved["blocks"][2]["fields"]]
    assert fields[1:] == ["*Job*\n—", "*Time*\n2026-11-26 12:42:05 UTC"]


def test_huge_slack_content_is_cut_visibly_within_every_limit() -> None:
    title = "Ünïcødé 🚨 <&> " * 200
    message = "x" * 10_000
    payload = slack_payload([note(title=title, message=message, alert_id="a" * 5000)])
    assert block_problems(payload) == []
    assert len(header(payload)) <= 150
    assert header(payload).endswith("…")
    section = payload["blocks"][1]["text"]["text"]
    assert len(section) == 3000
    assert section.endswith("…")
    assert len(payload["text"]) <= 3000
    assert payload["text"].endswith("…")


def test_huge_escaped_message_stays_within_the_section_limit() -> None:
    payload = slack_payload([note(message="<" * 2999)])  # 2999 chars, 11,996 escaped
    section = payload["blocks"][1]["text"]["text"]
    assert len(section) <= 3000
    assert section.endswith("&lt;…")
    assert block_problems(payload) == []


def test_empty_message_still_makes_a_valid_section() -> None:
    payload = slack_payload([note(message="")])
    assert block_problems(payload) == []


def test_slack_digest_lists_each_notification() -> None:
    notes = [
        note(alert_id="alert_a", title="Backup <failed>"),
        note(alert_id="alert_b", event=Event.RESOLVED, title="Sync late"),
        note(alert_id="alert_c", event=Event.REMINDER, reminder=2, severity="CRITICAL"),
    ]
    payload = slack_payload(notes)
    assert block_problems(payload) == []
    assert header(payload) == "3 alert notifications"
    listing = "\n".join(mrkdwn_texts(payload)[1:])
    for needle in ("alert_a", "alert_b", "alert_c", "Backup &lt;failed&gt;", "reminder #2"):
        assert needle in listing
    assert "[CRITICAL]" in listing
    assert "resolved: Sync late" in listing
    assert "more" not in listing
    assert payload["text"].startswith("3 alert notifications")
    assert "alert_c" in payload["text"]


def test_slack_digest_counts_what_did_not_fit() -> None:
    payload = slack_payload(many(2000, title="T" * 400))
    assert block_problems(payload) == []
    blocks = payload["blocks"]
    assert len(blocks) == 50
    listed = sum(block["text"]["text"].count("\n") + 1 for block in blocks[1:-1])
    last = blocks[-1]["text"]["text"]
    assert last == f"…and {2000 - listed} more"
    assert 0 < listed < 2000
    assert len(payload["text"]) <= 3000
    assert payload["text"].splitlines()[-1].startswith("…and ")


# --- Email -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notification", "expected"),
    [
        (note(), "[ERROR] Nightly backup failed"),
        (note(event=Event.RESOLVED), "[RESOLVED] Nightly backup failed"),
        (note(event=Event.REMINDER, reminder=1), "[REMINDER] [ERROR] Nightly backup failed"),
        (note(title="two\nlines\r\nhere"), "[ERROR] two lines here"),
    ],
)
def test_email_subject(notification: Notification, expected: str) -> None:
    assert mail_body([notification], SENDER, TEAM, False)["subject"] == expected


def test_long_subject_is_cut_with_an_ellipsis() -> None:
    subject = mail_body([note(title="w" * 1000)], SENDER, TEAM, False)["subject"]
    assert len(subject) <= 200
    assert subject.endswith("…")


def test_email_bodies_show_everything_and_html_escapes_it() -> None:
    alert = note(title="<script>alert(1)</script>", message="a < b & c", event=Event.RESOLVED)
    body = mail_body([alert], SENDER, TEAM, False)
    assert mail_problems(body) == []
    plain, markup = body["content"]
    assert plain["type"] == "text/plain"
    assert markup["type"] == "text/html"
    assert "<script>" not in markup["value"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup["value"]
    assert "a &lt; b &amp; c" in markup["value"]
    assert "<script>alert(1)</script>" in plain["value"]
    for value in (plain["value"], markup["value"]):
        for needle in ("ERROR", "resolved", "job_failed", "job_42", "alert_1"):
            assert needle in value
        assert "2026-11-26 12:42:05 UTC" in value
    assert body["personalizations"] == [
        {"to": [{"email": "ops@example.com", "name": "Ops"}, {"email": "oncall@example.com"}]}
    ]
    assert body["from"] == {"email": "jobwarden@example.com", "name": "Jobwarden"}


def test_sandbox_mode_is_a_real_boolean_and_only_when_asked() -> None:
    sandboxed = mail_body([note()], SENDER, TEAM, True)
    assert sandboxed["mail_settings"]["sandbox_mode"]["enable"] is True
    assert mail_problems(sandboxed) == []
    assert "mail_settings" not in mail_body([note()], SENDER, TEAM, False)


def test_email_recipients_are_listed_once() -> None:
    twice = (*TEAM, EmailAddress("OPS@example.com", "Ops again"))
    body = mail_body([note()], SENDER, twice, False)
    assert [to["email"] for to in body["personalizations"][0]["to"]] == [
        "ops@example.com",
        "oncall@example.com",
    ]


def test_email_digest_lists_two_hundred_and_counts_the_rest() -> None:
    body = mail_body(many(250, message="m" * 5000), SENDER, TEAM, False)
    assert mail_problems(body) == []
    assert body["subject"] == "[DIGEST] 250 alert notifications"
    plain, markup = (item["value"] for item in body["content"])
    for value in (plain, markup):
        assert "alert_199" in value
        assert "alert_200" not in value
        assert "and 50 more" in value


# --- Webhook ---------------------------------------------------------------------------


def test_signature_reproduces_the_published_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_fake_receivers_verifier_accepts_the_test_vector_and_nothing_else() -> None:
    stamp = str(VECTOR_TIMESTAMP)
    assert verify(VECTOR_SECRET, VECTOR_ID, stamp, VECTOR_BODY, VECTOR_SIGNATURE)
    assert verify(VECTOR_SECRET, VECTOR_ID, stamp, VECTOR_BODY, f"v1,bogus {VECTOR_SIGNATURE}")
    assert not verify(VECTOR_SECRET, VECTOR_ID, stamp, b'{"test": 1}', VECTOR_SIGNATURE)
    assert not verify(VECTOR_SECRET, "msg_other", stamp, VECTOR_BODY, VECTOR_SIGNATURE)
    assert not verify(VECTOR_SECRET, VECTOR_ID, stamp, VECTOR_BODY, "v2," + VECTOR_SIGNATURE[3:])


def test_webhook_body_carries_the_event_and_the_alert_as_its_columns() -> None:
    reminder = note(event=Event.REMINDER, reminder=2)
    body = webhook_body(reminder, CREATED.timestamp() + 0.25)
    assert body == {
        "type": "alert.reminder",
        "timestamp": "2026-11-26T12:00:00.250Z",
        "data": reminder.alert.as_data(),
    }
    assert json.loads(json.dumps(body))["data"]["createdAt"] == "2026-11-26T12:00:00.000Z"


# --- Shared ----------------------------------------------------------------------------


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    now = CREATED.timestamp()
    assert retry_after("30", now) == 30
    assert retry_after(" 1.5 ", now) == 1.5
    assert retry_after(format_datetime(CREATED + timedelta(seconds=90), usegmt=True), now) == 90
    assert retry_after(format_datetime(CREATED - timedelta(hours=1), usegmt=True), now) == 0
    for useless in (None, "", "soon", "nan", "inf"):
        assert retry_after(useless, now) is None


async def test_configured_channels_follow_the_settings() -> None:
    everything = load_settings(
        {
            "SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T/B/x",
            "ALERT_WEBHOOK_URL": "https://receiver.example/hook",
            "JOBWARDEN_WEBHOOK_SECRET": VECTOR_SECRET,
            "SENDGRID_API_KEY": "SG.key",
            "ALERT_EMAIL_FROM": "Jobwarden <jobwarden@example.com>",
            "ALERT_EMAIL_RECIPIENTS": "ops@example.com",
            "JOBWARDEN_STATE_DIR": "/nonexistent",
        }
    )
    nothing = load_settings({"JOBWARDEN_STATE_DIR": "/nonexistent"})
    async with aiohttp.ClientSession() as http:
        names = [channel.name for channel in configured_channels(everything, http, sandbox=True)]
        assert names == ["slack", "webhook", "email"]
        assert configured_channels(nothing, http, sandbox=False) == []


def test_a_webhook_url_echoed_json_escaped_or_decoded_is_hidden_too() -> None:
    url = "https://hooks.example.com/services/T1/B2/abcSECRET?token=x%20y"
    echoed = (
        'bad payload for "https:\\/\\/hooks.example.com\\/services\\/T1\\/B2\\/abcSECRET"'
        " (token=x y)"
    )
    hidden = hide_url(echoed, url)
    assert "abcSECRET" not in hidden
    assert "x y" not in hidden
