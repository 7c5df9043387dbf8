"""The two hot statements, compiled once by SQLAlchemy and run on the DBAPI cursor.

The webhook's INSERT and the lookup by id are nearly all the database work of a
request. Through `Connection.execute`, SQLAlchemy's execution machinery (a cache key,
an execution context, a result object per call) cost more CPU than the driver call
itself (README, Performance). Here SQLAlchemy still writes the SQL for the dialect,
converts every value with the column types' own bind and result processors (so an
amount stays a `Decimal`, a time stays UTC), and judges every driver error, exactly
as `Connection.execute` would: only the per-call machinery is skipped.
"""

import functools
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement


@dataclass(frozen=True, eq=False)
class DriverStatement:
    sql: str
    parameter_names: tuple[str, ...]  # in the order of a positional driver
    positional: bool
    to_driver: dict[str, Callable[[Any], Any]]
    result_columns: tuple[Column, ...]
    dialect: Dialect

    def parameters(self, values: dict[str, Any]) -> tuple | dict:
        converted = [
            self.to_driver[name](values[name]) if name in self.to_driver else values[name]
            for name in self.parameter_names
        ]
        if self.positional:
            return tuple(converted)
        return dict(zip(self.parameter_names, converted, strict=True))

    def record(self, values: Sequence[Any], type_codes: tuple[Any, ...]) -> tuple:
        processors = self._from_driver(type_codes)
        return self._record_type(
            *(p(value) if p else value for p, value in zip(processors, values, strict=True))
        )

    @functools.cached_property
    def _record_type(self) -> type:
        return namedtuple("Record", [column.key for column in self.result_columns])

    @functools.cache  # noqa: B019 - a handful of statements, alive as long as the process
    def _from_driver(self, type_codes: tuple[Any, ...]) -> list[Callable[[Any], Any] | None]:
        # As SQLAlchemy does: the processor depends on the type the driver reports
        # (psycopg2 already gives NUMERIC as a Decimal; SQLite gives text).
        return [
            column.type.dialect_impl(self.dialect).result_processor(self.dialect, type_code)
            for column, type_code in zip(self.result_columns, type_codes, strict=True)
        ]


def compile_for_driver(
    statement: ClauseElement,
    dialect: Dialect,
    results: Sequence[Column],
    column_keys: Sequence[str] | None = None,
) -> DriverStatement:
    """`results`: the columns the statement returns, in order."""
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    names = tuple(compiled.positiontup or compiled.binds)
    to_driver = {}
    for name in names:
        processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            to_driver[name] = processor
    return DriverStatement(
        sql=compiled.string,
        parameter_names=names,
        positional=bool(compiled.positiontup),
        to_driver=to_driver,
        result_columns=tuple(results),
        dialect=dialect,
    )


def fetch_one(engine: Engine, statement: DriverStatement, values: dict[str, Any]) -> tuple | None:
    """Run the statement on a pooled connection; its first row, converted, or None.

    The engine autocommits, so a write is committed once this returns.
    """
    parameters = statement.parameters(values)
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        try:
            cursor.execute(statement.sql, parameters)
            row = cursor.fetchone()
            type_codes = tuple(column[1] for column in cursor.description)
            cursor.close()
        except connection.dialect.loaded_dbapi.Error as error:
            raise _as_sqlalchemy_error(connection, error, statement.sql, cursor) from error
    return None if row is None else statement.record(row, type_codes)


def _as_sqlalchemy_error(
    connection: Connection, error: Exception, sql: str, cursor: Any
) -> DBAPIError:
    """What Connection.execute would raise for this driver error, with the same effect:
    a connection that the error shows to be dead is invalidated, and so is the rest of
    the pool, since a database restart killed them all."""
    dialect = connection.dialect
    disconnected = dialect.is_disconnect(error, connection.connection.dbapi_connection, cursor)
    if disconnected:
        connection.invalidate(error)
        connection.engine.dispose()
    return DBAPIError.instance(
        sql,
        None,  # the parameters stay out of the message, hence out of any log
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=disconnected,
        dialect=dialect,
    )
