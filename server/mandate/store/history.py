"""Reading the access facts, now or at a past revision.

Every reader of fact rows that may answer about the past goes through `fact_rows`, so the
present and the history are read one way. (The history tables arrive with issue 10.)"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from mandate.store import models

# The tables whose rows the policy's facts come from (the fact index loads exactly these).
FACT_MODELS = (models.User, models.Organization, models.Membership, models.Resource, models.Connection,
               models.Assignment, models.OrganizationLink)


def fact_rows(session: Session, model, at_revision: int | None = None, *where):
    """The rows of a fact table as they were at `at_revision` (None: now), as plain rows with the
    table's column names, filtered by `where` (expressions on `model`'s columns)."""
    if at_revision is not None:
        raise NotImplementedError("history is not kept yet")
    return session.execute(select(model.__table__).where(*where)).all()
