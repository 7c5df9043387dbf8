"""Signed webhooks, as Standard Webhooks defines them (https://www.standardwebhooks.com).

A sender signs `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256 and sends
`webhook-signature: v1,<base64>`. Verification is the `standardwebhooks` package's;
this module adds what a receiver needs around it: several secrets at once (rotation),
and a 401 rather than a 500 for the garbage its parser chokes on.
"""

import binascii

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class InvalidSignature(Exception):
    """The request is not signed by any of our secrets; the message says why."""


def parse_secrets(raw: str | None) -> list[str]:
    """WEBHOOK_SECRET: one secret, or several separated by commas during a rotation."""
    secrets = [secret.strip() for secret in (raw or "").split(",") if secret.strip()]
    for secret in secrets:
        try:
            Webhook(secret)
        except Exception as exc:  # binascii.Error, EmptyWebhookSecretError, ...
            # Never echo the secret itself.
            name = type(exc).__name__
            raise ValueError(
                f"WEBHOOK_SECRET holds a secret that is not whsec_<base64>: {name}"
            ) from None
    return secrets


class SignatureVerifier:
    def __init__(self, secrets: list[str]):
        self._webhooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: dict[str, str]) -> None:
        """Return if any secret signed this body; raise InvalidSignature otherwise.

        The library also refuses a timestamp more than 5 minutes off, in the past
        or the future, which bounds how long a captured request can be replayed.
        """
        if not all(headers.get(name) for name in SIGNATURE_HEADERS):
            raise InvalidSignature("Send webhook-id, webhook-timestamp and webhook-signature.")
        reason = "The signature does not match."
        for webhook in self._webhooks:
            try:
                webhook.verify(body, headers, json_parse=False)
                return
            except WebhookVerificationError as exc:
                reason = _explain(str(exc))
            except (ValueError, TypeError, OverflowError, binascii.Error):
                # The library's parser raises these on garbage such as "garbage",
                # "v1,a,b" or "v1,@@@", and on a body that is not UTF-8.
                reason = "The signature headers are malformed."
        raise InvalidSignature(reason)


def _explain(library_message: str) -> str:
    return {
        "Message timestamp too old": "webhook-timestamp is more than 5 minutes in the past.",
        "Message timestamp too new": "webhook-timestamp is more than 5 minutes in the future.",
        "Invalid Signature Headers": "webhook-timestamp is not a Unix time in seconds.",
    }.get(library_message, "The signature does not match.")
