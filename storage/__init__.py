"""Persistence for workbot: models, migrations, domain operations and read queries."""
