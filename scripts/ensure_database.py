"""Make sure the database DATABASE_URL names exists, before migrations run (start_services.sh).

A PostgreSQL database that is not there is created when the server lets us (a local
development server usually does); otherwise this says, in a few lines and without a traceback,
which database is missing and the command that creates it. Exit status 0: it exists now.
"""

import shlex
import sys

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from app.config import load_config


def say(line: str) -> None:
    print(line, file=sys.stderr)


def first_line(error: DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0]


def connects(url: URL) -> None:
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def create_command(url: URL) -> str:
    """createdb, owned by the service's own user, for someone allowed to create databases."""
    options = [f"-h {url.host or 'localhost'}", f"-p {url.port or 5432}"]
    if url.username:
        options.append(f"-O {shlex.quote(url.username)}")
    return f"createdb {' '.join(options)} {shlex.quote(url.database)}"


def ensure_postgres_database(url: URL) -> int:
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    try:
        connects(url)
        return 0
    except DBAPIError as error:
        if "does not exist" not in first_line(error) or url.database not in first_line(error):
            say(f"error: cannot connect to PostgreSQL at {where}: {first_line(error)}")
            return 1
    # The server answers; the database is missing. Create it from the maintenance database.
    admin = create_engine(
        url.set(database="postgres"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    name = url.database.replace('"', '""')
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except DBAPIError as error:
        say(f'error: the database "{url.database}" does not exist on {where},')
        say(f"and it could not be created here ({first_line(error)}).")
        say("Create it as a user allowed to, then run ./start_services.sh again:")
        say(f"    {create_command(url)}")
        return 1
    finally:
        admin.dispose()
    print(f'Created the database "{url.database}" on {where}')
    return 0


def main() -> int:
    url = make_url(load_config()["SQLALCHEMY_DATABASE_URI"])
    if url.get_backend_name() != "postgresql":
        return 0  # SQLite creates its file on first use
    return ensure_postgres_database(url)


if __name__ == "__main__":
    sys.exit(main())
