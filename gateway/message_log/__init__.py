"""The gateway's message log: every call it answers for a principal, hash-chained per replica.

``chain`` is the pure part (canonical encoding, hashing, walking a chain); ``capture`` turns a call
into a record's fields; ``recorder`` buffers records and writes them in batches; ``store`` holds the
SQL; ``api`` the admin endpoints (query, export, verify). The guide is docs/exchange.md.
"""
