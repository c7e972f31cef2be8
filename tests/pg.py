"""PostgreSQL for tests: the server's URL and an empty schema per test or module.

``scripts/start-postgres.sh`` starts a server and prints the export line for
``FLOWBUILDER_TEST_POSTGRES_URL``. Without it PostgreSQL tests are skipped, except in CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

POSTGRES_ENV = "FLOWBUILDER_TEST_POSTGRES_URL"


def postgres_url() -> str:
    """The test server's URL; skips the test (fails it in CI) when none is set."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        return url
    why = (
        f"{POSTGRES_ENV} is not set: run scripts/start-postgres.sh as root and export "
        "the URL it prints"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: the PostgreSQL tests must run in CI)", pytrace=False)
    pytest.skip(why)


def fresh_schema(prefix: str) -> Iterator[str]:
    """Yield the URL of a new, empty schema named ``<prefix>_<random>``; drop it after."""
    base = sa.make_url(postgres_url())
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()
