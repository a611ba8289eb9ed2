"""Exactly one worker per point: an atomic claim in the sweep's database.

Optuna hands points to trials, but it cannot promise that two workers never get the same one: its
GridSampler documents duplicate suggestions under concurrency (optuna/optuna#2039, #4627), and popping a
queued trial is a read followed by a write that SQLite does not lock (issue #4621). So before a trial trains
a point it claims it here, in a small table beside Optuna's own (same database, same URL):

    convmixer_sweep_claims(study, point, attempt, trial_number, owner, claimed_at)   primary key (study, point, attempt)

A claim is an INSERT. The primary key lets exactly one INSERT of a (study, point, attempt) row succeed,
on SQLite, PostgreSQL and MySQL alike; every other one fails with an IntegrityError, and that worker leaves
the point alone. A point may be claimed again (attempt + 1) only once the trial holding the latest claim has
finished without completing: it failed, was interrupted, or Optuna's heartbeat declared its worker dead.
Two workers that both see that may both try attempt + 1, and again only one INSERT succeeds.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

TABLE = "convmixer_sweep_claims"


@dataclass(frozen=True)
class Claim:
    point: str
    attempt: int
    trial_number: int
    owner: str  # host:pid of the worker that holds it
    claimed_at: datetime


def engine_kwargs(url: str) -> dict:
    """SQLite: wait up to a minute for a lock instead of failing at once (several workers, one file)."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


class ClaimTable:
    """The claims of one study (one sweep)."""

    def __init__(self, url: str, study: str) -> None:
        import sqlalchemy as sa

        self.study = study
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.engine = sa.create_engine(url, **engine_kwargs(url))
        meta = sa.MetaData()
        self.table = sa.Table(
            TABLE, meta,
            sa.Column("study", sa.String(255), primary_key=True),
            sa.Column("point", sa.String(191), primary_key=True),
            sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("trial_number", sa.Integer, nullable=False),
            sa.Column("owner", sa.String(255), nullable=False),
            sa.Column("claimed_at", sa.DateTime, nullable=False),
        )
        try:
            meta.create_all(self.engine, checkfirst=True)
        except sa.exc.DatabaseError:  # another worker created it between the check and the CREATE
            if not sa.inspect(self.engine).has_table(TABLE):
                raise

    def latest(self) -> dict[str, Claim]:
        """The latest claim of every claimed point."""
        import sqlalchemy as sa

        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.study == self.study).order_by(t.c.point, t.c.attempt)).all()
        return {r.point: Claim(r.point, r.attempt, r.trial_number, r.owner, r.claimed_at) for r in rows}

    def claim(self, point: str, trial_number: int, holder_gave_up: Callable[[int], bool]) -> bool:
        """Claim ``point`` for trial ``trial_number``; True only for the one worker whose INSERT went in.

        ``holder_gave_up(number)`` is asked about the trial of the latest claim: True (it failed or was
        interrupted) lets this trial try the next attempt; False (running, waiting or complete) means no.
        """
        import sqlalchemy as sa

        t = self.table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.attempt, t.c.trial_number)
                               .where(t.c.study == self.study, t.c.point == point)
                               .order_by(t.c.attempt.desc()).limit(1)).first()
        if row is not None and not holder_gave_up(row.trial_number):
            return False
        attempt = 0 if row is None else row.attempt + 1
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(t).values(study=self.study, point=point, attempt=attempt,
                                                 trial_number=trial_number, owner=self.owner,
                                                 claimed_at=datetime.now()))
        except sa.exc.IntegrityError:
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.engine.dispose()
