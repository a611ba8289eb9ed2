"""A seconds-long sweep on synthetic data: tiny ConvMixers (the training tests' TINY settings), 8 steps an epoch;
and the storages a sweep can share: the default SQLite file, and a PostgreSQL server where one is given."""

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from convmixer.experiments.sweep import default_storage
from convmixer.training.config import parse_assignment

from ..training.conftest import TINY

TINY_SET = dict(parse_assignment(a) for a in TINY if not a.startswith(("model.kernel_size", "model.patch_size")))


@pytest.fixture(autouse=True)
def _one_thread():
    """Sweeps here run in this process: one torch thread is several times faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_spec(tmp_path):
    """Write a tiny spec; keyword arguments replace or add top-level fields (``set`` entries are merged)."""

    def make(name: str = "tiny", *, set: dict | None = None, **fields) -> Path:
        tree = {"name": name, "base": "fmnist", "set": {**TINY_SET, "model.patch_size": 4, **(set or {})},
                "grid": {"model.kernel_size": [3, 5]}, "seeds": [0, 1]}
        tree.update(fields)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    return make


# ----------------------------------------------------------------------------------------------------------------
# Storages
# ----------------------------------------------------------------------------------------------------------------
POSTGRES_ENV = "CONVMIXER_TEST_POSTGRES_URL"  # .ci/run sets it: `eval "$(bash scripts/test_postgres.sh start)"`


@dataclass(frozen=True)
class Storage:
    """Where a test's sweep keeps its study and claims."""

    url: str | None = None  # None: the sweep's default, sqlite:///<sweep dir>/sweep.db

    def for_sweep(self, sweep_dir: Path) -> str:
        return self.url or default_storage(sweep_dir)

    @property
    def args(self) -> list[str]:
        """The `convmixer sweep` arguments that select it."""
        return ["--storage", self.url] if self.url else []


@pytest.fixture
def postgres_url():
    """A new PostgreSQL database for this test alone (so reruns never meet an old study), dropped after it.

    Skipped, with the reason, where CONVMIXER_TEST_POSTGRES_URL is not set; where it is set (CI), a server that
    cannot be reached fails the test."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"needs a PostgreSQL server: set {POSTGRES_ENV} "
                    f"(eval \"$(bash scripts/test_postgres.sh start)\", as .ci/run does)")
    import sqlalchemy as sa

    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"convmixer_test_{uuid.uuid4().hex[:12]}"
    error = None
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.SQLAlchemyError as e:
        error = str(e).splitlines()[0]
    if error is not None:  # (outside the except block: one line, not the driver's traceback)
        admin.dispose()
        pytest.fail(f"{POSTGRES_ENV} is set but no database could be created there: {error}")
    try:
        yield sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:  # FORCE: ends the sessions that the test's engines still hold
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request) -> Storage:
    """Each storage a sweep is shared on: tests that take this run once per storage."""
    if request.param == "sqlite":
        return Storage()
    return Storage(request.getfixturevalue("postgres_url"))
