"""Alembic migrations of the run store's schema (see :meth:`flowbuilder.store.db.Database.migrate`).

No ``alembic.ini``: the configuration is made in code. To add a migration after changing
the tables in ``flowbuilder/store/tables.py``, point ``FLOWBUILDER_DATABASE_URL`` at a scratch
database at the current head and run::

    from alembic import command
    from flowbuilder.store.db import alembic_config
    command.revision(alembic_config(), "add runs.priority", rev_id="0002", autogenerate=True)

then review ``versions/0002_….py``. ``env.py`` sets ``render_as_batch``, so the
generated ``op.batch_alter_table`` blocks also work on SQLite. The test suite checks
that the migrated schema matches the models on SQLite and PostgreSQL.
"""
