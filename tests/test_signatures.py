"""Signed webhooks (Standard Webhooks): with WEBHOOK_SECRET set, only signed bodies get in."""

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from conftest import make_app
from helpers import as_json, webhook
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from app.extensions import db
from app.store.models import Transaction
from app.web.signatures import parse_secrets

URL = "/v1/webhooks/transactions"
SECRET = "whsec_" + base64.b64encode(b"a secret of thirty-two bytes!!!!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the secret we are rotating away").decode()

# The specification's published test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.fixture
def signed_app(database_url):
    app = make_app(database_url, WEBHOOK_SECRETS=[SECRET, OLD_SECRET])
    with app.app_context():
        db.session.execute(db.delete(Transaction))
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


def signed_headers(body: str, secret: str = SECRET, timestamp: float | None = None, msg_id="msg_1"):
    moment = datetime.fromtimestamp(timestamp or time.time(), UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, body),
    }


def stored(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Transaction))


def test_the_specification_test_vector_signs_as_published():
    moment = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, moment, VECTOR_BODY) == VECTOR_SIGNATURE


def test_the_test_vector_passes_our_endpoint_with_the_clock_fixed(database_url, monkeypatch):
    """The signature check passes (so the body reaches validation: 422, not 401)."""

    class FixedClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(VECTOR_TIMESTAMP + 10, tz)

    monkeypatch.setattr("standardwebhooks.webhooks.datetime", FixedClock)
    app = make_app(database_url, WEBHOOK_SECRETS=[VECTOR_SECRET])
    headers = {
        "Content-Type": "application/json",
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    response = app.test_client().post(URL, data=VECTOR_BODY, headers=headers)
    assert response.status_code == 422
    tampered = app.test_client().post(URL, data=VECTOR_BODY.replace("4", "5"), headers=headers)
    assert tampered.status_code == 401
    with app.app_context():
        db.engine.dispose()


def test_a_correctly_signed_webhook_is_accepted(signed_app):
    body = as_json(webhook())
    response = signed_app.test_client().post(URL, data=body, headers=signed_headers(body))
    assert response.status_code == 202
    assert stored(signed_app) == 1


def test_either_secret_works_during_a_rotation(signed_app):
    client = signed_app.test_client()
    for secret in (SECRET, OLD_SECRET):
        body = as_json(webhook())
        assert client.post(URL, data=body, headers=signed_headers(body, secret)).status_code == 202
    assert stored(signed_app) == 2


def test_a_replayed_signed_webhook_is_a_harmless_duplicate(signed_app):
    body = as_json(webhook())
    headers = signed_headers(body)
    client = signed_app.test_client()
    assert client.post(URL, data=body, headers=headers).status_code == 202
    replayed = client.post(URL, data=body, headers=headers)
    assert (replayed.status_code, replayed.headers["Idempotent-Replayed"]) == (202, "true")
    assert stored(signed_app) == 1


def unsigned(body):
    return {"Content-Type": "application/json"}


def other_secret(body):
    secret = "whsec_" + base64.b64encode(b"somebody else's secret, 32 bytes").decode()
    return signed_headers(body, secret)


def with_signature(value):
    return lambda body: signed_headers(body) | {"webhook-signature": value}


def with_timestamp(value):
    return lambda body: signed_headers(body) | {"webhook-timestamp": value}


def respelled_timestamp(spell):
    """Signed as usual, then the timestamp written another way for the same second: the
    library reads it with float() and signs the whole second, so the signature still fits."""

    def make(body):
        headers = signed_headers(body)
        return headers | {"webhook-timestamp": spell(headers["webhook-timestamp"])}

    return make


ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))


def minutes_off(minutes):
    return lambda body: signed_headers(body, timestamp=time.time() + minutes * 60)


def without(header):
    return lambda body: {k: v for k, v in signed_headers(body).items() if k != header}


@pytest.mark.parametrize(
    "make_headers, reason",
    [
        (unsigned, "Send webhook-id"),
        (without("webhook-id"), "Send webhook-id"),
        (without("webhook-timestamp"), "Send webhook-id"),
        (without("webhook-signature"), "Send webhook-id"),
        (other_secret, "does not match"),
        (with_signature("garbage"), "malformed"),
        (with_signature("v1,a,b"), "malformed"),
        (with_signature("v1,@@@"), "does not match"),
        (with_signature("v1,abc"), "malformed"),
        (with_signature("v2,c2lnbmF0dXJl"), "does not match"),
        (with_signature(""), "Send webhook-id"),
        (with_timestamp("yesterday"), "not a Unix time"),
        (with_timestamp("nan"), "not a Unix time"),
        (with_timestamp("1e400"), "not a Unix time"),
        # The same second written otherwise is refused, not read: Standard Webhooks sends
        # whole seconds in ASCII digits, and one spelling per second leaves nothing to vary.
        (respelled_timestamp(lambda t: t + ".0"), "not a Unix time"),
        (respelled_timestamp(lambda t: t + ".9"), "not a Unix time"),
        (respelled_timestamp(lambda t: " " + t), "not a Unix time"),
        (respelled_timestamp(lambda t: t[:4] + "_" + t[4:]), "not a Unix time"),
        (respelled_timestamp(lambda t: t.translate(ARABIC_INDIC)), "not a Unix time"),
        (respelled_timestamp(lambda t: "+" + t), "not a Unix time"),
        (minutes_off(-6), "in the past"),
        (minutes_off(6), "in the future"),
    ],
)
def test_a_webhook_that_is_not_signed_right_is_401_and_not_stored(signed_app, make_headers, reason):
    body = as_json(webhook())
    response = signed_app.test_client().post(URL, data=body, headers=make_headers(body))
    assert response.status_code == 401
    problem = response.get_json()
    assert problem["status"] == 401
    assert reason in problem["detail"]
    assert response.headers["WWW-Authenticate"]
    assert stored(signed_app) == 0


def test_a_tampered_body_is_401(signed_app):
    body = as_json(webhook())
    headers = signed_headers(body)
    tampered = body.replace('"acc_merchant_456"', '"acc_attacker_666"')
    assert signed_app.test_client().post(URL, data=tampered, headers=headers).status_code == 401


@pytest.mark.parametrize("signed", ["for this body", "for another"])
def test_a_body_that_is_not_utf8_is_400_naming_it_signed_or_not(signed_app, signed):
    """Standard Webhooks signs text, so such a body cannot be checked; it is not a 500,
    nor a signature said to be malformed when it may well be right."""
    body = b'{"transaction_id": "\xff"}'
    headers = signed_headers("irrelevant")
    if signed == "for this body":  # the scheme's HMAC over these very bytes
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        to_sign = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        digest = hmac.new(key, to_sign, hashlib.sha256).digest()
        headers["webhook-signature"] = "v1," + base64.b64encode(digest).decode()
    response = signed_app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["detail"] == "The body is not valid UTF-8."
    assert stored(signed_app) == 0


def test_an_unsigned_body_that_is_not_utf8_is_401_asking_for_a_signature(signed_app):
    response = signed_app.test_client().post(
        URL, data=b'{"transaction_id": "\xff"}', content_type="application/json"
    )
    assert response.status_code == 401
    assert "webhook-signature" in response.get_json()["detail"]


def test_options_needs_no_signature(signed_app):
    response = signed_app.test_client().options(URL)
    assert response.status_code == 204
    assert "POST" in response.headers["Allow"]


def test_within_five_minutes_either_way_is_accepted(signed_app):
    client = signed_app.test_client()
    for minutes in (-4, 4):
        body = as_json(webhook())
        headers = signed_headers(body, timestamp=time.time() + minutes * 60)
        assert client.post(URL, data=body, headers=headers).status_code == 202


@pytest.mark.parametrize("raw", ["not-base64!", "whsec_", "whsec_%%%"])
def test_a_bad_secret_stops_the_service_at_start_without_echoing_it(raw):
    with pytest.raises(ValueError, match="WEBHOOK_SECRET") as caught:
        parse_secrets(raw)
    assert raw.removeprefix("whsec_") not in str(caught.value) or not raw.removeprefix("whsec_")


def test_secrets_are_comma_separated_for_rotation():
    assert parse_secrets(f" {SECRET} , {OLD_SECRET} ") == [SECRET, OLD_SECRET]
    assert parse_secrets("") == []
    assert parse_secrets(None) == []


def as_svix(headers: dict[str, str]) -> dict[str, str]:
    """The same signature under Svix's header names, as Svix sends it."""
    return {name.replace("webhook-", "svix-"): value for name, value in headers.items()}


def test_svix_headers_are_accepted_like_webhook_headers(signed_app):
    body = as_json(webhook())
    response = signed_app.test_client().post(URL, data=body, headers=as_svix(signed_headers(body)))
    assert response.status_code == 202, response.get_json()
    assert stored(signed_app) == 1


@pytest.mark.parametrize(
    "make_headers, reason",
    [
        (lambda body: as_svix(other_secret(body)), "does not match"),
        (lambda body: as_svix(minutes_off(-6)(body)), "in the past"),
        (lambda body: as_svix(with_signature("garbage")(body)), "malformed"),
        (lambda body: as_svix(without("webhook-id")(body)), "svix-id"),
    ],
    ids=["other secret", "too old", "garbage", "incomplete"],
)
def test_svix_headers_are_checked_like_webhook_headers(signed_app, make_headers, reason):
    body = as_json(webhook())
    response = signed_app.test_client().post(URL, data=body, headers=make_headers(body))
    assert response.status_code == 401
    assert reason in response.get_json()["detail"]
    assert stored(signed_app) == 0


def test_svix_headers_are_read_first_as_the_svix_library_does(signed_app):
    body = as_json(webhook())
    # svix-* complete and right, webhook-* signed by someone else: svix wins.
    headers = as_svix(signed_headers(body)) | other_secret(body)
    client = signed_app.test_client()
    assert client.post(URL, data=body, headers=headers).status_code == 202
    # svix-* incomplete: the webhook-* family is used instead.
    body = as_json(webhook())
    headers = signed_headers(body) | {"svix-id": "msg_only_half_svix"}
    assert client.post(URL, data=body, headers=headers).status_code == 202


@pytest.mark.parametrize(
    "before",
    ["garbage", "v1,a,b", "v1,abc", "v2,c2lnbmF0dXJl", ",", "v1,", "v1,@@@", "v1a,bad v1"],
)
def test_an_entry_that_does_not_parse_is_skipped_not_fatal(signed_app, before):
    body = as_json(webhook())
    headers = signed_headers(body)
    headers["webhook-signature"] = f"{before} {headers['webhook-signature']}"
    response = signed_app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 202, response.get_json()
    # ...and for Svix's names too.
    body = as_json(webhook())
    headers = as_svix(signed_headers(body))
    headers["svix-signature"] = f"{headers['svix-signature']} {before}"
    assert signed_app.test_client().post(URL, data=body, headers=headers).status_code == 202
    assert stored(signed_app) == 2


def test_only_unparseable_entries_are_401(signed_app):
    body = as_json(webhook())
    headers = signed_headers(body) | {"webhook-signature": "garbage v1,a,b v1,abc"}
    response = signed_app.test_client().post(URL, data=body, headers=headers)
    assert response.status_code == 401
    assert "malformed" in response.get_json()["detail"]
    assert stored(signed_app) == 0
