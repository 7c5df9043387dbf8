"""Commands for developers and operators.

`flask --app app send-webhook` sends a test webhook, signed if WEBHOOK_SECRET is set;
`flask --app app retry-failed` re-drives FAILED transactions in bulk.
"""

import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy.exc import InterfaceError, OperationalError
from standardwebhooks.webhooks import Webhook

from app.exact_json import dumps_exact
from app.extensions import db
from app.store.transactions import redrive_failed


@click.command("send-webhook")
@click.option("--url", help="The service. Default: http://127.0.0.1:$PORT (environment, .env).")
@click.option("--transaction-id", help="Default: a new txn_... id.")
@click.option("--amount", default="100.50", show_default=True)
@click.option("--currency", default="USD", show_default=True)
@click.option("--source-account", default="acc_demo_source", show_default=True)
@click.option("--destination-account", default="acc_demo_destination", show_default=True)
@with_appcontext
def send_webhook(url, transaction_id, amount, currency, source_account, destination_account):
    """Send one webhook as a provider would, signed with the first WEBHOOK_SECRET."""
    url = url or f"http://127.0.0.1:{current_app.config['PORT']}"
    body = dumps_exact(
        {
            "transaction_id": transaction_id or f"txn_{uuid.uuid4().hex[:16]}",
            "source_account": source_account,
            "destination_account": destination_account,
            "amount": Decimal(amount),
            "currency": currency,
        }
    )
    headers = {"Content-Type": "application/json"}
    secrets = current_app.config["WEBHOOK_SECRETS"]
    if secrets:
        message_id = f"msg_{uuid.uuid4().hex}"
        moment = datetime.now(UTC)
        headers |= {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(secrets[0]).sign(message_id, moment, body),
        }
    else:
        click.echo("WEBHOOK_SECRET is not set: sending it unsigned.", err=True)
    click.echo(f"POST {url}/v1/webhooks/transactions\n{body}")
    request = urllib.request.Request(
        f"{url}/v1/webhooks/transactions", data=body.encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, answer = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read().decode()
    except urllib.error.URLError as error:
        raise click.ClickException(f"nothing answers at {url}: {error.reason}") from None
    click.echo(f"{status} {answer}")
    if status >= 300:
        raise SystemExit(1)


def _utc(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # Overflow: 0001-01-01T00:00+01:00 is before year 1
        raise click.BadParameter("use ISO 8601, such as 2026-11-27T10:00:00Z") from None


@click.command("retry-failed")
@click.option("--since", help="Only those that failed at or after this UTC time (ISO 8601).")
@click.option("--error-contains", help="Only those whose last error contains this text.")
@click.option(
    "--transaction-id",
    "transaction_ids",
    multiple=True,
    help="Only this one (repeat for several).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="At most this many, those that failed first: re-drive an outage's failures in waves.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be re-driven; change nothing.")
@with_appcontext
def retry_failed(since, error_contains, transaction_ids, limit, dry_run):
    """Re-drive FAILED transactions: PROCESSING again, due now, attempts counted afresh."""
    since = _utc(since)
    try:
        ids = redrive_failed(
            since=since,
            error_contains=error_contains,
            transaction_ids=list(transaction_ids) or None,
            limit=limit,
            dry_run=dry_run,
        )
    except (OperationalError, InterfaceError) as error:  # nothing was changed: one statement
        where = db.engine.url.render_as_string(hide_password=True)
        lines = str(error.orig or "").strip().splitlines()
        reason = lines[0] if lines else type(error).__name__
        raise click.ClickException(
            f"the database does not answer at {where}: {reason}. Run it again once it does: "
            "it re-drives only what is still FAILED."
        ) from None
    verb = "would re-drive" if dry_run else "re-drove"
    click.echo(f"{verb} {len(ids)} FAILED transaction{'' if len(ids) == 1 else 's'}")
    for transaction_id in ids:
        click.echo(transaction_id)
