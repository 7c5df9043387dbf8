"""The webhook schema on its own: what it accepts, what it refuses and why."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from helpers import webhook
from marshmallow import ValidationError

from app.exact_json import loads_exact, plain_number
from app.web.schemas import TransactionSchema, WebhookTransactionSchema, to_iso8601

schema = WebhookTransactionSchema()


def errors_for(body: dict) -> dict:
    with pytest.raises(ValidationError) as caught:
        schema.load(body)
    return caught.value.messages


def test_valid_body_loads_with_exact_amount():
    loaded = schema.load(webhook(amount=loads_exact("0.30"), currency="USD"))
    assert loaded["amount"] == Decimal("0.30")
    assert isinstance(loaded["amount"], Decimal)


def test_unknown_fields_are_ignored():
    loaded = schema.load(webhook(merchant_category="5411", metadata={"a": 1}))
    assert "merchant_category" not in loaded
    assert "metadata" not in loaded


def test_currency_is_upper_cased():
    assert schema.load(webhook(currency="usd", amount=Decimal("1.5")))["currency"] == "USD"


@pytest.mark.parametrize("field", ["transaction_id", "source_account", "destination_account"])
@pytest.mark.parametrize(
    "value, message",
    [
        ("", "Must not be empty or blank."),
        ("   ", "Must not be empty or blank."),
        ("\u200b\u2060\ufeff", "Must not be empty or blank."),  # zero-width, word joiner, BOM
        (" \u00ad\u200d ", "Must not be empty or blank."),  # soft hyphen, zero-width joiner
        ("\u3164", "Must not be empty or blank."),  # Hangul filler, a letter that draws nothing
        ("\u115f\u1160\uffa0", "Must not be empty or blank."),  # the other Hangul fillers
        ("\u2800 \u034f", "Must not be empty or blank."),  # Braille blank, grapheme joiner
        ("\ufe0f\U000e0100", "Must not be empty or blank."),  # variation selectors alone
        ("x" * 256, "Longer than maximum length 255."),
        (123, "Not a valid string."),
        (None, "Field may not be null."),
        ("bad\x00id", "Must not contain control characters or unpaired surrogates."),
        ("lone\ud800surrogate", "Must not contain control characters or unpaired surrogates."),
        ("acc_\u202e987_resu", "Must not contain bidirectional overrides or isolates."),
        ("acc_\u2067x\u2069", "Must not contain bidirectional overrides or isolates."),
    ],
)
def test_text_fields_refuse(field, value, message):
    assert errors_for(webhook(**{field: value})) == {field: [message]}


@pytest.mark.parametrize(
    "transaction_id",
    [
        "txn_dup ",  # a header value's trailing space is stripped: it would be "txn_dup"'s key
        " txn_lead",
        "txn_dup\u00a0",  # no-break space
        "txn_中文",
        "txn_\U0001f600",
        "txn\u200b_1",  # zero-width space
    ],
)
def test_a_transaction_id_a_header_cannot_carry_is_refused(transaction_id):
    [message] = errors_for(webhook(transaction_id=transaction_id))["transaction_id"]
    assert message.startswith("Must be printable ASCII")


@pytest.mark.parametrize("transaction_id", ["txn:2024.01-15", "with inner space", "?#&%/~", "!"])
def test_a_transaction_id_may_hold_any_printable_ascii(transaction_id):
    assert schema.load(webhook(transaction_id=transaction_id))["transaction_id"] == transaction_id


def test_a_transaction_id_may_be_255_characters():
    value = "".join(chr(c) for c in range(0x21, 0x7F)) * 3  # 282 printable characters
    assert schema.load(webhook(transaction_id=value[:255]))["transaction_id"] == value[:255]
    assert errors_for(webhook(transaction_id=value[:256]))["transaction_id"] == [
        "Longer than maximum length 255."
    ]


@pytest.mark.parametrize("currency", ["uſd", "ınr"])  # upper() makes USD and INR of them
def test_a_currency_code_is_ascii(currency):
    assert list(errors_for(webhook(currency=currency))) == ["currency"]


@pytest.mark.parametrize("field", ["source_account", "destination_account"])
def test_account_fields_accept_255_characters_of_any_script(field):
    value = "é" * 200 + "ü:.-_/" + "x" * 49
    assert len(value) == 255
    assert schema.load(webhook(**{field: value}))[field] == value


@pytest.mark.parametrize(
    "value",
    [
        "\u2764\ufe0f",  # a heart with its emoji variation selector
        "\ud55c\u3164\uae00",  # Hangul around a filler
        "\u2800acc",  # Braille blank before letters
        "\U0001f469\u200d\U0001f4bb",  # a joined emoji
    ],
)
def test_an_invisible_character_beside_visible_ones_is_kept(value):
    assert schema.load(webhook(source_account=value))["source_account"] == value


@pytest.mark.parametrize(
    "field", ["transaction_id", "source_account", "destination_account", "amount", "currency"]
)
def test_every_field_is_required(field):
    body = webhook()
    del body[field]
    assert errors_for(body) == {field: ["Missing data for required field."]}


@pytest.mark.parametrize(
    "amount, message",
    [
        (0, "Must be greater than 0."),
        (Decimal("-1.5"), "Must be greater than 0."),
        (Decimal("0.00"), "Must be greater than 0."),
        ("100.50", "Must be a JSON number, such as 100.50."),
        (True, "Must be a JSON number, such as 100.50."),
        (None, "Field may not be null."),
        ([1], "Must be a JSON number, such as 100.50."),
        (1.5, "Must be a JSON number, such as 100.50."),  # a float never gets this far
        (Decimal("1E+400"), "Must be less than 1,000,000,000,000,000."),
        (10**15, "Must be less than 1,000,000,000,000,000."),
        (Decimal("0.00001"), "CLF has 4 decimal places; this amount has 5."),
        (Decimal("1E-999999999"), "CLF has 4 decimal places; this amount has 999999999."),
    ],
)
def test_amount_refuses(amount, message):
    assert errors_for(webhook(amount=amount, currency="CLF")) == {"amount": [message]}


@pytest.mark.parametrize(
    "amount, currency",
    [
        (Decimal("1.5"), "JPY"),  # JPY has no minor unit
        (Decimal("100.001"), "USD"),  # USD has 2
        (Decimal("1.0001"), "KWD"),  # KWD has 3
    ],
)
def test_amount_with_more_places_than_its_currency_is_refused_not_rounded(amount, currency):
    messages = errors_for(webhook(amount=amount, currency=currency))
    assert list(messages) == ["amount"]
    assert "decimal places" in messages["amount"][0]


@pytest.mark.parametrize(
    "amount, message",
    [
        (Decimal("5e-324"), "USD has 2 decimal places; this amount has 324."),
        (Decimal("0.00001"), "USD has 2 decimal places; this amount has 5."),
        (Decimal("1.5"), "JPY has 0 decimal places; this amount has 1."),
        (Decimal("0.0001"), "KWD has 3 decimal places; this amount has 4."),
    ],
)
def test_too_many_places_names_the_currencys_own_number(amount, message):
    currency = message[:3]
    assert errors_for(webhook(amount=amount, currency=currency)) == {"amount": [message]}


@pytest.mark.parametrize(
    "amount, currency",
    [
        (Decimal("100"), "JPY"),
        (Decimal("100.000"), "JPY"),  # trailing zeros carry no value
        (Decimal("100.25"), "USD"),
        (Decimal("1.125"), "KWD"),
        (Decimal("1.1250"), "CLF"),
        (Decimal("999999999999999.99"), "USD"),  # the largest USD amount the column holds
        (1, "EUR"),
    ],
)
def test_amount_within_its_currency_is_accepted(amount, currency):
    assert schema.load(webhook(amount=amount, currency=currency))["amount"] == amount


@pytest.mark.parametrize("currency", ["XXQ", "US", "840", "USDD", "", "XAU", "XTS", "XXX", 840])
def test_currency_must_be_a_real_iso_4217_code(currency):
    messages = errors_for(webhook(currency=currency))
    assert list(messages) == ["currency"]


@pytest.mark.parametrize(
    "stored, shown",
    [
        ("100.5000", "100.5"),
        ("100.50", "100.5"),
        ("0.30", "0.3"),
        ("1E+2", "100"),
        ("1500.0000", "1500"),
        ("999999999999999.9999", "999999999999999.9999"),
    ],
)
def test_amounts_are_shown_in_their_shortest_exact_form(stored, shown):
    assert str(plain_number(Decimal(stored))) == shown


def test_timestamps_are_utc_iso_8601_with_z():
    moment = datetime(
        2024, 1, 15, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    assert to_iso8601(moment) == "2024-01-15T10:30:00.123456Z"
    assert to_iso8601(moment, timespec="seconds") == "2024-01-15T10:30:00Z"


def test_transaction_schema_dumps_null_processed_at():
    dumped = TransactionSchema().dump(
        {
            "transaction_id": "t",
            "amount": Decimal("100.5000"),
            "status": "PROCESSING",
            "created_at": datetime(2024, 1, 15, 10, 30, tzinfo=UTC),
            "processed_at": None,
        }
    )
    assert dumped["amount"] == Decimal("100.5")
    assert dumped["created_at"] == "2024-01-15T10:30:00.000000Z"
    assert dumped["processed_at"] is None
