"""lumen.records: a Core select's rows as named tuples, on both databases."""

from __future__ import annotations

import gc

import sqlalchemy as sa

from lumen import records
from lumen.records import _TYPES, record_type

TABLE = sa.table("t", sa.column("id"), sa.column("name"))


def test_records_read_like_rows_by_attribute_and_position(backend):
    engine = backend[2]
    statement = sa.select(
        sa.literal(7).label("id"), sa.literal("Łódź").label("name"), sa.literal(None).label("rank")
    )
    with engine.connect() as connection:
        (row,) = connection.execute(statement).all()
        (record,) = records(connection, statement)
    assert (record.id, record.name, record.rank) == (row.id, row.name, row.rank)
    assert (record.id, record.name, record.rank) == (7, "Łódź", None)
    assert tuple(record) == tuple(row)
    assert type(record)._fields == ("id", "name", "rank")


def test_parameters_are_bound_and_an_empty_result_is_an_empty_list(backend):
    statement = sa.select(sa.literal(1).label("n")).where(sa.bindparam("wanted") == 1)
    with backend[2].connect() as connection:
        assert records(connection, statement, {"wanted": 2}) == []
        assert [r.n for r in records(connection, statement, {"wanted": 1})] == [1]


def test_the_type_is_made_once_per_statement_and_goes_with_it():
    one = sa.select(TABLE.c.id, TABLE.c.name)
    assert record_type(one) is record_type(one)
    assert record_type(sa.select(TABLE.c.name))._fields == ("name",)
    kept = len(_TYPES)
    for _ in range(100):  # statements built per call must not pile up
        record_type(sa.select(TABLE.c.id))
    gc.collect()
    assert len(_TYPES) <= kept
