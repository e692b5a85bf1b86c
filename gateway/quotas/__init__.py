"""Per-consumer rate limits and daily quotas that hold across gateway replicas.

``policies`` is the arithmetic (windows, reservations, the IETF ``RateLimit`` fields), ``ledger`` is
one replica's share of the count and how it settles with the others through ``quota_usage``.
"""
