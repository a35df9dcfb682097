"""Access history: the fact rows and the policy at any kept revision.

The fact tables hold the present. Every write transaction also records, before it commits, the
versions it created in the `<table>_history` tables (`record`): a version is valid from the
revision that wrote it until the revision that replaced it (`ended_revision`). So the facts at
a revision are one query per table (`fact_rows`), and they are exactly the rows the fact index
applied at that revision: both read the rows a revision wrote by their `revision` column.

Every policy that serves is recorded too (`record_policy`): starting to serve a policy is a
change of its own, with its revision and event, so each revision has exactly one policy.
Retention (`forget_before`) drops versions that ended before a revision and moves the horizon:
answers about older revisions are refused, never guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Column, bindparam, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.visitors import replacement_traverse

from mandate.store import models
from mandate.store.models import FACT_MODELS, HISTORY

__all__ = ["FACT_MODELS", "fact_rows", "record", "record_bulk", "horizon", "revision_at", "newest_time",
           "last_policy", "record_policy", "policy_at", "forget_before"]


def fact_rows(session: Session, model, at_revision: int | None = None, *where):
    """The rows of a fact table as they were at `at_revision` (None: now), as plain rows with the
    table's column names, filtered by `where` (expressions on `model`'s columns)."""
    table = model.__table__
    if at_revision is None:
        return session.execute(select(table).where(*where)).all()
    history = HISTORY[model]

    def to_history(element):
        if isinstance(element, Column) and element.table is table:
            return history.c[element.name]
        return None

    conditions = [replacement_traverse(condition, {}, to_history) for condition in where]
    return session.execute(
        select(*(history.c[c.name] for c in table.columns)).where(
            history.c.revision <= at_revision,
            or_(history.c.ended_revision.is_(None), history.c.ended_revision > at_revision),
            *conditions,
        )
    ).all()


def _statements():
    """The statements `record` runs, built once: building and keying them anew on every write
    cost more than running them."""
    newest = select(*(select(func.max(model.__table__.c.revision)).scalar_subquery() for model in FACT_MODELS))
    per_model = {}
    for model in FACT_MODELS:
        table, history = model.__table__, HISTORY[model]
        keys = [c.name for c in table.primary_key]
        revision = bindparam("written")  # not "revision": a column of the history has that name
        written_keys = select(*(table.c[k] for k in keys)).where(table.c.revision == revision)
        history_keys = tuple_(*(history.c[k] for k in keys)) if len(keys) > 1 else history.c[keys[0]]
        # Each written row ends its current version, found by the history's primary key (the
        # row's key, then the revision): a few index look-ups, whatever the size of the history.
        end = (update(history)
               .where(history.c.ended_revision.is_(None), history_keys.in_(written_keys))
               .values(ended_revision=revision))
        # The new versions are copied inside the database, and come back as the rows written.
        columns = [c.name for c in table.columns]
        add = (insert(history)
               .from_select(columns, select(*(table.c[c] for c in columns)).where(table.c.revision == revision))
               .returning(*(history.c[c] for c in columns)))
        # On PostgreSQL both in one round trip: the update as a data-modifying WITH, which runs
        # on the statement's snapshot, so it never sees (never ends) the versions it adds.
        per_model[model] = (end, add, add.add_cte(end.cte("ended")))
    return newest, per_model


_NEWEST, _PER_MODEL = _statements()


# Which fact tables a write touched: the newest revision of each, in FACT_MODELS order (the
# writer may run it with more columns after these, to save a round trip: see Store.write).
NEWEST = _NEWEST


def record(session: Session, revision: int, newest: tuple | None = None) -> list[tuple[object, list]]:
    """Inside the write transaction of `revision`: end the versions of the rows it wrote and add
    their new versions. Only the tables it wrote are touched (one statement finds them), with
    two statements each (one on PostgreSQL) that move no rows through the service but the new
    versions they return.
    Returns the rows it wrote, per fact model: after the commit, the fact index of this
    process applies them as they are instead of reading them again (FactIndex.apply_written).
    `newest`: the answer of NEWEST, when the caller asked it already (after every change)."""
    if newest is None:
        session.flush()  # the changes still held as objects
        newest = session.connection().execute(_NEWEST).one()
    connection = session.connection()
    together = connection.dialect.name == "postgresql"
    written = []
    parameters = {"written": revision}
    for model, latest in zip(FACT_MODELS, newest, strict=True):
        if latest != revision:
            continue
        end, add, end_and_add = _PER_MODEL[model]
        if together:
            written.append((model, connection.execute(end_and_add, parameters).all()))
            continue
        connection.execute(end, parameters)  # before the new versions exist: it must not end them
        written.append((model, connection.execute(add, parameters).all()))
    return written


def record_bulk(session: Session, revision: int) -> None:
    """`record` for a write of many rows (an import): a few set-based statements per table,
    whatever the number of rows. Returns None: readers read the rows back from the store."""
    connection = session.connection()
    for model in FACT_MODELS:
        table, history = model.__table__, HISTORY[model]
        keys = [c.name for c in table.primary_key]
        rewritten = select(table.c.revision).where(table.c.revision == revision,
                                                    *(table.c[k] == history.c[k] for k in keys))
        connection.execute(update(history).where(history.c.ended_revision.is_(None), history.c.revision < revision,
                                                 rewritten.exists()).values(ended_revision=revision))
        names = [c.name for c in table.columns]
        connection.execute(insert(history).from_select(names, select(*(table.c[n] for n in names))
                                                        .where(table.c.revision == revision)))
    return None


def horizon(session: Session) -> int:
    """The oldest revision the history can answer about."""
    return session.execute(select(models.HistoryHorizon.kept_from_revision)).scalar_one_or_none() or 0


def revision_at(session: Session, moment: str) -> int:
    """The last revision committed at or before `moment` (RFC 3339 text in the store's format):
    every revision records its events with the time they happened."""
    found = session.execute(select(func.max(models.Event.revision)).where(models.Event.occurred_at <= moment))
    return found.scalar_one() or 0


def newest_time(session: Session) -> str | None:
    """The time of the newest revision committed (revisions are stamped in rising order)."""
    return session.execute(select(func.max(models.Event.occurred_at))).scalar_one()


def last_policy(session: Session) -> str | None:
    """The version of the policy that serves from the newest period on."""
    return session.execute(select(models.PolicyPeriod.policy_version)
                           .order_by(models.PolicyPeriod.id.desc()).limit(1)).scalar_one_or_none()


def record_policy(session: Session, version: str, sources: dict[str, str], revision: int, at: str) -> None:
    """Inside the write transaction of `revision`: the policy `version` serves from it on."""
    if session.get(models.PolicyText, version) is None:
        session.add(models.PolicyText(policy_version=version, sources=sources))
        session.flush()  # the period refers to it
    session.add(models.PolicyPeriod(policy_version=version, from_revision=revision, from_at=at))


@dataclass(frozen=True)
class ServedPolicy:
    version: str
    sources: dict[str, str]


def policy_at(session: Session, revision: int) -> ServedPolicy | None:
    """The policy that served at `revision`: the last one recorded at or before it (a policy
    starts serving with a revision of its own, so each revision has exactly one); None when
    none was recorded by then."""
    version = session.execute(select(models.PolicyPeriod.policy_version)
                              .where(models.PolicyPeriod.from_revision <= revision)
                              .order_by(models.PolicyPeriod.id.desc()).limit(1)).scalar_one_or_none()
    if version is None:
        return None
    text = session.get(models.PolicyText, version)
    sources = text.sources if isinstance(text.sources, dict) else json.loads(text.sources)
    return ServedPolicy(version, sources)


def forget_before(session: Session, revision: int) -> int:
    """Retention: drop the versions that ended at or before `revision` and keep answering only
    from it on. Returns how many versions were dropped."""
    dropped = 0
    for history in HISTORY.values():
        dropped += session.execute(history.delete().where(history.c.ended_revision <= revision)).rowcount
    session.execute(update(models.HistoryHorizon).where(models.HistoryHorizon.kept_from_revision < revision)
                    .values(kept_from_revision=revision))
    return dropped
