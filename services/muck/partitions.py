"""Daily partitions of ``positions``: made ahead, dropped whole once past the retention.

A terminal re-uploads what it kept while it had no network (0x0704 type 1), possibly days later:
positions are accepted ``DAYS_BACK`` days after their time, so partitions exist from that far back.
"""

from __future__ import annotations

from citygrid.partitions import TimePartitions

DAYS_BACK = 7
DAYS_AHEAD = 3
# The shortest retention of raw positions: a month (a violation's evidence is copied out when found).
MINIMUM_RETENTION_DAYS = 30

PARTITIONS = TimePartitions(
    ("positions",), "day", days_back=DAYS_BACK, periods_ahead=DAYS_AHEAD, lock_id=7_744_001
)
