"""Outbound delivery: the outbox sender and its retry policy."""
