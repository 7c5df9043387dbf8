"""Property-based: whatever arrives at the webhook endpoint, the answer is never a 5xx,
never a traceback, and a refused body stores nothing. On SQLite and PostgreSQL."""

import simplejson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.extensions import db
from app.store.models import Transaction

URL = "/v1/webhooks/transactions"
FIELDS = ["transaction_id", "source_account", "destination_account", "amount", "currency"]

# Any JSON value, including the nasty ones: huge and tiny numbers, NaN and
# infinities, control characters, lone surrogates, deep structures.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet=st.characters(codec=None), max_size=300)
    | st.sampled_from(["USD", "usd", "JPY", "KWD", "XXQ", "XAU", "", " ", "\x00", "\ud800"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)

# A webhook that looks right, with any of its fields swapped for any JSON value
# or left out: most inputs get past the parser, so the deep paths are exercised.
plausible = {
    "transaction_id": st.text(min_size=1, max_size=300),
    "source_account": st.text(min_size=1, max_size=20),
    "destination_account": st.text(min_size=1, max_size=20),
    "amount": st.decimals(min_value=0, max_value=10**16, places=2) | st.integers(0, 10**16),
    "currency": st.sampled_from(["USD", "usd", "JPY", "KWD", "EUR", "INR", "XXQ", "XAU"]),
}


def mutated(base: dict, replaced: dict, removed: set) -> dict:
    return {key: value for key, value in {**base, **replaced}.items() if key not in removed}


bodies = st.builds(
    mutated,
    base=st.fixed_dictionaries(plausible),
    replaced=st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=2),
    removed=st.sets(st.sampled_from(FIELDS), max_size=2),
)

nasty_texts = st.sampled_from(
    [
        "[" * 20_000 + "]" * 20_000,
        '{"a":' * 5_000 + "1" + "}" * 5_000,
        '{"amount": 1e400, "currency": "USD"}',
        '{"amount": -1e-400}',
        '{"amount": 1' + "0" * 5000 + "}",
        '{"transaction_id": "a", "transaction_id": "b"}',
        '{"amount": NaN}',
        '{"amount": Infinity}',
        "\ufeff{}",
        "{}\x00",
        "",
        " ",
        "null",
        "{" + '"k":1,' * 2000 + '"k":2}',
    ]
)

# Header values as HTTP allows them: visible Latin-1 and spaces, no line breaks.
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f")
)
header_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
extra_headers = st.dictionaries(
    header_names.map(lambda name: "X-" + name), header_values, max_size=3
)

content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "application/problem+json",
        "APPLICATION/JSON",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
) | header_values.filter(lambda value: len(value) < 40)


hypothesis_settings = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def stored_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Transaction))


def assert_handled(app, client, data: bytes | str, content_type: str, headers=None):
    before = stored_count(app)
    # TESTING propagates exceptions: a bug on any path fails the test loudly.
    response = client.post(
        URL, data=data, headers={**(headers or {}), "Content-Type": content_type}
    )
    text = response.get_data(as_text=True)
    assert response.status_code < 500, text
    assert "Traceback" not in text and 'File "' not in text
    if response.status_code >= 300:
        problem = response.get_json()
        assert problem["status"] == response.status_code
        assert stored_count(app) == before
    else:
        assert response.status_code == 202


@hypothesis_settings
@given(body=bodies, content_type=content_types)
def test_generated_bodies(app, client, body, content_type):
    assert_handled(
        app, client, simplejson.dumps(body, ensure_ascii=True, allow_nan=True), content_type
    )


@hypothesis_settings
@given(raw=st.binary(max_size=2000) | nasty_texts, headers=extra_headers)
def test_raw_bytes_and_malformed_documents(app, client, raw, headers):
    assert_handled(app, client, raw, "application/json", headers)


@hypothesis_settings
@given(body=bodies)
def test_non_ascii_sent_raw(app, client, body):
    data = simplejson.dumps(body, ensure_ascii=False, allow_nan=True).encode(
        "utf-8", errors="surrogatepass"
    )
    assert_handled(app, client, data, "application/json; charset=utf-8")


def test_a_huge_body_is_refused_without_reading_it_all(app, client):
    assert_handled(app, client, b"{" + b" " * 10_000_000 + b"}", "application/json")
