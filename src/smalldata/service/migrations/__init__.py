"""The database's schema, step by step (Alembic): a database made by any earlier version is brought
up to date when the service or the CLI opens it; nothing stored is dropped."""
