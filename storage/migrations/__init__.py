"""Alembic migrations for workbot's schema (applied with `workbot migrate`)."""
