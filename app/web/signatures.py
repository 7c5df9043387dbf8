"""Signed webhooks, as Standard Webhooks defines them (https://www.standardwebhooks.com).

A sender signs `<webhook-id>.<webhook-timestamp>.<body>` with HMAC-SHA256 and sends
`webhook-signature: v1,<base64>`. Verification is the `standardwebhooks` package's;
this module adds what a receiver needs around it: several secrets at once (rotation),
Svix's names for the same headers, and a 401 rather than a 500 for garbage.
"""

import base64
import binascii
import re
from collections.abc import Mapping

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
# Svix, the largest sender of this scheme, sends svix-id, svix-timestamp and
# svix-signature. Like the svix library, we look for those first, then webhook-*.
HEADER_FAMILIES = ("svix-", "webhook-")
WHOLE_SECONDS = re.compile(r"[0-9]{1,11}")  # a Unix time in seconds, until the year 5138


def signature_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The three headers under their webhook-* names, from whichever family sent all three."""
    for prefix in HEADER_FAMILIES:
        found = [headers.get(prefix + name.removeprefix("webhook-")) for name in SIGNATURE_HEADERS]
        if all(found):
            return dict(zip(SIGNATURE_HEADERS, found, strict=True))
    return None


def parseable_signatures(signature_list: str) -> str:
    """The space-separated list without the entries that do not parse as `<version>,<base64>`.

    An entry we cannot read is skipped, not fatal (as a list meant for several
    schemes may hold one we do not know): `garbage v1,<valid>` is valid.
    """
    kept = []
    for entry in signature_list.split(" "):
        version, comma, signature = entry.partition(",")
        if not (version and comma) or "," in signature:
            continue
        try:
            base64.b64decode(signature)  # as the library will decode it
        except (binascii.Error, ValueError):
            continue
        kept.append(entry)
    return " ".join(kept)


class InvalidSignature(Exception):
    """The request is not signed by any of our secrets; the message says why."""


class UnverifiableBody(Exception):
    """The body cannot be checked against a signature (it is not UTF-8); a 400, not a 401."""


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
        found = signature_headers(headers)
        if found is None:
            raise InvalidSignature(
                "Send webhook-id, webhook-timestamp and webhook-signature "
                "(or svix-id, svix-timestamp and svix-signature)."
            )
        if not WHOLE_SECONDS.fullmatch(found["webhook-timestamp"]):
            # The library reads it with float(), which also takes "T.9", " T", "1_7..." and
            # other digits than ASCII for the second it signs: one spelling, or a 401.
            raise InvalidSignature(_explain("Invalid Signature Headers"))
        found["webhook-signature"] = parseable_signatures(found["webhook-signature"])
        if not found["webhook-signature"]:
            raise InvalidSignature("The signature headers are malformed.")
        reason = "The signature does not match."
        for webhook in self._webhooks:
            try:
                webhook.verify(body, found, json_parse=False)
                return
            except WebhookVerificationError as exc:
                reason = _explain(str(exc))
            except UnicodeDecodeError:
                # The scheme signs text: a body that is not UTF-8 cannot be checked, and is
                # named for what it is, not taken for a bad signature (it could not parse).
                raise UnverifiableBody("The body is not valid UTF-8.") from None
            except (ValueError, TypeError, OverflowError, binascii.Error):
                # The library would raise these on "garbage" or "v1,a,b", which
                # parseable_signatures drops first.
                reason = "The signature headers are malformed."
        raise InvalidSignature(reason)


def _explain(library_message: str) -> str:
    return {
        "Message timestamp too old": "webhook-timestamp is more than 5 minutes in the past.",
        "Message timestamp too new": "webhook-timestamp is more than 5 minutes in the future.",
        "Invalid Signature Headers": "webhook-timestamp is not a Unix time in seconds.",
    }.get(library_message, "The signature does not match.")
