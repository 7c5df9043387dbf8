"""JSON that never turns money into a float.

Numbers with a fraction or an exponent are read as `Decimal` and written back as
JSON numbers, so `0.30` stays `0.30` on the way in and `0.3` on the way out.
"""

import decimal
from decimal import Decimal
from typing import Any

import simplejson
from flask.json.provider import JSONProvider


class InvalidJSON(ValueError):
    """The body is not a JSON document we accept; the message says why."""


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # `{"amount": 1, "amount": 1000}` is ambiguous; parsers disagree on which wins.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise InvalidJSON(f"The key {repeated!r} appears more than once.")
    return obj


def loads_exact(data: bytes | str) -> Any:
    """Parse strict JSON: decimals stay exact, NaN/Infinity and repeated keys are refused."""
    try:
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return simplejson.loads(
            data,
            use_decimal=True,
            allow_nan=False,
            object_pairs_hook=_reject_duplicate_keys,
        )
    except UnicodeDecodeError:
        raise InvalidJSON("The body is not valid UTF-8.") from None
    except simplejson.JSONDecodeError as exc:
        reason = f"{_reason(exc)} at position {exc.pos}"
        raise InvalidJSON(f"The body is not valid JSON: {reason}.") from None
    except RecursionError:
        raise InvalidJSON("The body nests too deeply.") from None
    except InvalidJSON:
        raise
    except decimal.InvalidOperation:  # an exponent past what Decimal holds (1e10**18)
        raise InvalidJSON("The body holds a number too large to read.") from None
    except ValueError:  # an integer past Python's limit on digits (4,300)
        raise InvalidJSON("The body holds a number with too many digits.") from None


def _reason(exc: simplejson.JSONDecodeError) -> str:
    # simplejson's `msg` is a template: "Invalid control character %r at" is left with its
    # %r unfilled (the character at `pos`) and an "at" that ours would repeat.
    reason = exc.msg.removesuffix(" at")
    if "%r" in reason:
        reason = reason.replace("%r", repr(exc.doc[exc.pos : exc.pos + 1]))
    return reason


def dumps_exact(obj: Any, **kwargs: Any) -> str:
    return simplejson.dumps(obj, use_decimal=True, separators=(",", ":"), **kwargs)


class ExactJSONProvider(JSONProvider):
    """Flask's JSON provider, with Decimal kept exact in both directions."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps_exact(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_exact(s)


def plain_number(amount: Decimal) -> Decimal:
    """The shortest exact form, never in exponent notation: 100.5000 -> 100.5, 1E+2 -> 100."""
    if amount == amount.to_integral_value():
        return amount.quantize(Decimal(1))
    return amount.normalize()
