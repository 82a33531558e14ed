"""Alembic's entry point: run on the connection `storage.migrate` hands over (no alembic.ini)."""

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode: SQLite alters a table by copying it, which Alembic does where a step needs it.
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
