"""The channels alerts go out through: Slack, a generic webhook, email (SendGrid).

`configured_channels()` builds each channel whose configuration is present: Slack
with `SLACK_WEBHOOK_URL`, the webhook with `ALERT_WEBHOOK_URL` (signed when
`JOBWARDEN_WEBHOOK_SECRET` is set), email with `SENDGRID_API_KEY`, a sender and
recipients. All of them share the daemon's one HTTP session.
"""

import aiohttp

from jobwarden.alerts.channels.base import Attempt, Channel, Outcome
from jobwarden.alerts.channels.sendgrid import EmailChannel
from jobwarden.alerts.channels.slack import SlackChannel
from jobwarden.alerts.channels.webhook import WebhookChannel
from jobwarden.config import Settings

__all__ = [
    "Attempt",
    "Channel",
    "EmailChannel",
    "Outcome",
    "SlackChannel",
    "WebhookChannel",
    "configured_channels",
]


def configured_channels(
    settings: Settings, http: aiohttp.ClientSession, *, sandbox: bool
) -> list[Channel]:
    """The channels to send through; `sandbox`: SendGrid validates mail without sending."""
    channels: list[Channel] = []
    if settings.slack_webhook_url is not None:
        channels.append(SlackChannel(http, settings.slack_webhook_url))
    if settings.alert_webhook_url is not None:
        channels.append(WebhookChannel(http, settings.alert_webhook_url, settings.webhook_secret))
    sender, recipients = settings.alert_email_from, settings.alert_email_recipients
    if settings.sendgrid_api_key is not None and sender is not None and recipients:
        channels.append(
            EmailChannel(
                http,
                settings.sendgrid_base_url,
                settings.sendgrid_api_key,
                sender,
                recipients,
                sandbox=sandbox,
            )
        )
    return channels
