"""The horizon reader's one rule without I/O: a full read leaves its last transaction whole for the
next read (the reads against PostgreSQL are the muck rules' and the waste movements' tests)."""

from __future__ import annotations

from typing import NamedTuple

from citygrid.fleet.horizon import whole_transactions


class Row(NamedTuple):
    txid: int


def test_a_read_short_of_its_limit_takes_everything_up_to_the_horizon() -> None:
    rows = [Row(5), Row(5), Row(7)]
    assert whole_transactions(rows, 10, 9) == (rows, 9)
    assert whole_transactions([], 10, 9) == ([], 9)


def test_a_full_read_leaves_its_last_transaction_for_the_next() -> None:
    rows = [Row(5), Row(6), Row(7), Row(7)]
    assert whole_transactions(rows, 4, 9) == ([Row(5), Row(6)], 7)


def test_a_full_read_of_one_transaction_moves_nothing() -> None:
    # One transaction larger than a read cannot be split: the cursor stays, and the reader must read
    # more at once (a writer's transaction holds at most 5,000 rows, a read 20,000).
    assert whole_transactions([Row(7)] * 3, 3, 9) == ([], 7)
