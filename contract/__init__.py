"""The cross-department exchange contract: event payloads and shared value types, per domain.

Consumers import these models, never another service's code.
"""
