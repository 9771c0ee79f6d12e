"""Local fakes of the services alerts go out through: Slack, SendGrid, a webhook.

Each follows its contract in contracts.md, failures included, validates what it is
sent and records it; see `server.FakeService` for what they share.
"""

from tests.integration.fakes.sendgrid import SendGridFake
from tests.integration.fakes.server import FakeService, Received
from tests.integration.fakes.slack import SlackFake
from tests.integration.fakes.webhook import WebhookFake

__all__ = ["FakeService", "Received", "SendGridFake", "SlackFake", "WebhookFake"]
