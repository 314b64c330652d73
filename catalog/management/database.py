"""The database a management command needs, set up or explained.

On the embedded default (SQLite under ``IMGPROTECT_DATA_DIR``, no ``DATABASE_URL``) a
command run against a new data directory applies the migrations itself, quietly. With
``DATABASE_URL`` set the schema belongs to whoever deploys; the command says in one line
what to run and stops (``CommandError``: a non-zero exit, no traceback).
"""
from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor


def database_ready() -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        raise CommandError(f"cannot use the database: {exc}") from exc
    if not pending:
        return
    if settings.DATABASE_URL:
        raise CommandError("the database is not set up or not up to date: run `python manage.py migrate` first")
    call_command("migrate", verbosity=0, interactive=False)
