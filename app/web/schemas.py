"""What comes in (the webhook) and what goes out (acknowledgements, transactions)."""

import base64
import re
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import iso4217
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from app.exact_json import plain_number
from app.store.models import (
    AMOUNT_PRECISION,
    AMOUNT_SCALE,
    TRANSACTION_ID,
    TransactionStatus,
)

# ISO 4217 codes with their minor units (USD 2, JPY 0, KWD 3). Codes without
# minor units (gold XAU, testing XTS, "no currency" XXX) are not money we move.
MINOR_UNITS: dict[str, int] = {
    currency.code: currency.exponent
    for currency in iso4217.Currency
    if currency.exponent is not None
}
AMOUNT_LIMIT = Decimal(10) ** (AMOUNT_PRECISION - AMOUNT_SCALE)
assert max(MINOR_UNITS.values()) <= AMOUNT_SCALE, "every currency's amounts fit the column"
# The listing returns at most this many transactions per page, whatever is asked.
MAX_PAGE_SIZE = 200


def decimal_places(amount: Decimal) -> int:
    """Places after the point that carry value: 100.50 has 1, 100 has 0."""
    # From the digits, not normalize(), which rounds through the decimal context
    # and would turn 1E-999999999 into 0.
    _sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int), "amounts are finite"
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros))


def to_iso8601(moment: datetime, timespec: str = "microseconds") -> str:
    """UTC with a Z suffix: 2024-01-15T10:30:00.123456Z."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


# Control characters (Unicode category Cc) and unpaired surrogates (Cs): PostgreSQL
# cannot store NUL or a lone surrogate, and no account id needs the others.
UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): with
# them one account id reads as another on the operator's page ("Trojan Source"). The
# joiners that Persian and Indic names need (U+200C, U+200D) are not among them.
BIDI_CONTROLS = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
# Letters and marks that draw nothing: the Hangul fillers, the combining grapheme joiner,
# variation selectors (Unicode's Default_Ignorable_Code_Point, less what Cf already covers;
# Python's unicodedata does not expose the property), and the Braille blank, a symbol.
INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\ufe00-\ufe0f\uffa0"
    "\U000e0100-\U000e01ef]"
)


class Text(fields.String):
    """A string a database can store and a person can read: no control characters.

    Blank is nothing a person can see: whitespace, invisible format characters (Unicode
    Cf: a zero-width space, a soft hyphen, a byte-order mark) and the few letters that draw
    nothing (a Hangul filler), which would show an operator an empty account."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if all(
            char.isspace() or unicodedata.category(char) == "Cf" or INVISIBLE.match(char)
            for char in text
        ):
            raise ValidationError("Must not be empty or blank.")
        if UNSTORABLE.search(text):
            raise ValidationError("Must not contain control characters or unpaired surrogates.")
        if BIDI_CONTROLS.search(text):
            raise ValidationError("Must not contain bidirectional overrides or isolates.")
        return text


class TransactionId(Text):
    """A transaction id: printable ASCII, as a header can carry it (models.TRANSACTION_ID)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not TRANSACTION_ID.fullmatch(text):
            raise ValidationError(
                "Must be printable ASCII (letters, digits, punctuation, inner spaces), "
                "without leading or trailing spaces: it is sent as the processor's "
                "Idempotency-Key header."
            )
        return text


class Amount(fields.Field):
    """A JSON number, kept as an exact Decimal; never a string, never a float."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        # The body is parsed with decimals exact, so a JSON number is an int or a
        # Decimal here; True is an int to Python but not a number to JSON.
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise ValidationError("Must be a JSON number, such as 100.50.")
        amount = Decimal(value)
        if amount <= 0:
            raise ValidationError("Must be greater than 0.")
        if amount >= AMOUNT_LIMIT:
            raise ValidationError(f"Must be less than {AMOUNT_LIMIT:,}.")
        # Decimal places are checked against the currency's own (the schema's
        # amount_fits_currency), so that the message names them: no currency has
        # more than the column's scale, so that check covers the column too.
        return amount

    def _serialize(self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any):
        return None if value is None else plain_number(value)


class CurrencyCode(fields.String):
    """An ISO 4217 alphabetic code of a real currency, stored upper-case."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        given = super()._deserialize(value, attr, data, **kwargs)
        # ASCII first: upper() makes "USD" of "uſd" (a long s) and "INR" of "ınr".
        code = given.upper() if given.isascii() else given
        if code not in MINOR_UNITS:
            raise ValidationError("Must be an ISO 4217 currency code, such as USD, EUR or INR.")
        return code


class Timestamp(fields.Field):
    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any):
        return None if value is None else to_iso8601(value)


def _text(description: str, example: str, field: type[Text] = Text, **metadata: str) -> Text:
    return field(
        required=True,
        validate=validate.Length(max=255),
        metadata={"description": description, "example": example, "minLength": 1, **metadata},
    )


class WebhookTransactionSchema(Schema):
    """The body a payment provider posts."""

    class Meta:
        # Senders add fields over time; a field we do not know is not an error.
        unknown = EXCLUDE

    transaction_id = _text(
        "The sender's unique id for this transaction: printable ASCII, without leading or "
        "trailing spaces (it is the processor's Idempotency-Key).",
        "txn_8f3a2b",
        field=TransactionId,
        pattern=f"^{TRANSACTION_ID.pattern}$",
    )
    source_account = _text("Account the money leaves.", "acc_source_001")
    destination_account = _text("Account the money reaches.", "acc_dest_002")
    amount = Amount(
        required=True,
        metadata={
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": int(AMOUNT_LIMIT),
            "description": "Greater than 0, with no more decimal places than the currency has "
            "(ISO 4217 minor units: JPY 0, USD 2, KWD 3). Never a string.",
            "example": 100.50,
        },
    )
    currency = CurrencyCode(
        required=True,
        metadata={
            "description": "ISO 4217 code of a real currency, any case (stored upper-case).",
            "pattern": "^[A-Za-z]{3}$",
            "example": "USD",
        },
    )

    @validates_schema(skip_on_field_errors=True)
    def amount_fits_currency(self, data: dict[str, Any], **_kwargs: Any) -> None:
        places = MINOR_UNITS[data["currency"]]
        if decimal_places(data["amount"]) > places:
            raise ValidationError(
                f"{data['currency']} has {places} decimal places; this amount has "
                f"{decimal_places(data['amount'])}.",
                field_name="amount",
            )


class AcknowledgementSchema(Schema):
    message = fields.String(required=True)


class TransactionSchema(Schema):
    """A transaction as stored, with how far its processing has got."""

    transaction_id = fields.String()
    source_account = fields.String()
    destination_account = fields.String()
    amount = Amount(metadata={"type": "number", "example": 100.5})
    currency = fields.String()
    status = fields.String(metadata={"enum": [status.value for status in TransactionStatus]})
    created_at = Timestamp(metadata={"type": "string", "format": "date-time"})
    processed_at = Timestamp(
        allow_none=True,
        metadata={"type": "string", "format": "date-time", "description": "null until processed"},
    )
    next_attempt_at = Timestamp(
        allow_none=True,
        metadata={
            "type": "string",
            "format": "date-time",
            "description": "While PROCESSING, when the next attempt may start: its due time "
            "while it waits, the end of the running attempt's claim while one runs. null once "
            "PROCESSED or FAILED.",
        },
    )
    failed_at = Timestamp(
        allow_none=True,
        metadata={
            "type": "string",
            "format": "date-time",
            "description": "When it last ended FAILED; null if it never has. It stays after a "
            "re-drive, which redriven_at dates.",
        },
    )
    redriven_at = Timestamp(
        allow_none=True,
        metadata={
            "type": "string",
            "format": "date-time",
            "description": "When an operator last re-drove it from FAILED; null if never.",
        },
    )
    attempts = fields.Integer(metadata={"description": "Processor calls made so far."})
    last_error = fields.String(
        allow_none=True,
        metadata={"description": "Why the last failed attempt failed; null unless one failed."},
    )
    processor_reference = fields.String(
        allow_none=True,
        metadata={"description": "The processor's own reference, once it answered done."},
    )


class PageCursor(fields.Field):
    """Where a page of the listing ends: (created_at, transaction_id) of its last row,
    as an opaque token. Keyset pagination: no OFFSET, so deep pages cost what the
    first one does, and rows arriving meanwhile neither repeat nor vanish."""

    def _serialize(self, value: tuple[datetime, str] | None, attr, obj, **kwargs):
        if value is None:
            return None
        created_at, transaction_id = value
        raw = f"{to_iso8601(created_at)}\n{transaction_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _deserialize(self, value: Any, attr, data, **kwargs) -> tuple[datetime, str] | None:
        if value == "":
            return None  # `cursor=` is no cursor: the first page
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            created_at, transaction_id = raw.split("\n", 1)
            if UNSTORABLE.search(transaction_id):  # no stored id has one (Text, above)
                raise ValueError(transaction_id)
            created = datetime.fromisoformat(created_at)
            # Only the form _serialize writes (UTC, Z, microseconds). Python reads more
            # than PostgreSQL takes: an offset of 16 hours or more, or with a fraction of a
            # second, would reach the query and fail there as a 500.
            if to_iso8601(created) != created_at:
                raise ValueError(created_at)
            return created, transaction_id
        except (TypeError, ValueError, OverflowError):  # Overflow: year 1 moved to UTC
            raise ValidationError("Not a cursor this service gave out; use next_cursor.") from None


ASCII_DIGITS = re.compile(r"[0-9]{1,18}")


class QueryInteger(fields.Integer):
    """A whole number in a query string, in ASCII digits only: int() would also read
    " 5", "+5", "1_0" and "١٠" (Arabic-Indic), and a link should have one spelling."""

    def _deserialize(self, value: Any, attr, data, **kwargs) -> int:
        if not (isinstance(value, str) and ASCII_DIGITS.fullmatch(value)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class TransactionQuerySchema(Schema):
    """GET /v1/transactions: filters and the page to return."""

    status = fields.Enum(TransactionStatus, by_value=True, load_default=None)
    limit = QueryInteger(
        load_default=50,
        validate=validate.Range(min=1),
        metadata={"description": f"Page size; at most {MAX_PAGE_SIZE} are returned."},
    )
    cursor = PageCursor(
        load_default=None,
        metadata={"type": "string", "description": "next_cursor of the previous page."},
    )


class TransactionPageSchema(Schema):
    transactions = fields.List(fields.Nested(TransactionSchema))
    next_cursor = PageCursor(
        allow_none=True,
        metadata={
            "type": "string",
            "description": "Pass as cursor for the next page; null at the end.",
        },
    )


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "HEALTHY"})
    current_time = fields.String(metadata={"format": "date-time"})


class ComponentSchema(Schema):
    status = fields.String(metadata={"enum": ["up", "down"]})
    latency_ms = fields.Float(metadata={"description": "When up."})
    error = fields.String(metadata={"description": "When down: the kind of failure."})


class ReadinessSchema(Schema):
    status = fields.String(metadata={"example": "READY"})
    components = fields.Dict(
        keys=fields.String(metadata={"enum": ["database", "broker"]}),
        values=fields.Nested(ComponentSchema),
    )
