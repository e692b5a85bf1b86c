"""Webhook subscriptions: consumers' event subscriptions, delivered from JetStream, signed as the
Standard Webhooks specification says (docs/exchange.md#subscriptions).

``rules`` decides, without I/O, what a subscription may ask for and which events reach it, masked
how; ``intake`` turns each event of the platform's streams into deliveries; ``delivery`` sends them
with retries and backoff; ``service`` and ``api`` are the consumers' own API."""
