"""The three fake services together, and the configuration that points jobwarden at them."""

import base64
import os
from dataclasses import dataclass

from tests.integration.fakes.sendgrid import SendGridFake
from tests.integration.fakes.slack import SlackFake
from tests.integration.fakes.webhook import WebhookFake

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Services:
    slack: SlackFake
    hook: WebhookFake
    email: SendGridFake

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "SLACK_WEBHOOK_URL": self.slack.webhook_url,
            "ALERT_WEBHOOK_URL": self.hook.hook_url,
            "JOBWARDEN_WEBHOOK_SECRET": SECRET,
            "SENDGRID_API_KEY": self.email.api_key,
            "JOBWARDEN_SENDGRID_BASE_URL": self.email.base_url,
            "ALERT_EMAIL_FROM": "Jobwarden <jobwarden@example.com>",
            "ALERT_EMAIL_RECIPIENTS": "oncall@example.com, lead@example.com",
            "JOBWARDEN_DELIVERY_BACKOFF_BASE": "100ms",
            "JOBWARDEN_DELIVERY_BACKOFF_CAP": "1s",
            "JOBWARDEN_HTTP_CLIENT_TIMEOUT": "2s",
            **extra,
        }

    def counts(self) -> tuple[int, int, int]:
        return len(self.slack.messages), len(self.hook.messages), len(self.email.messages)
