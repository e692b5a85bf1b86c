"""The development stack: embedded PostgreSQL and NATS, every service and the gateway, one command."""
