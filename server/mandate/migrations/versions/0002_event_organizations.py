"""events: the organizations an event concerns, the calling service, the cause

Revision ID: 0002
Revises: 0001

ListEvents and Watch filter by organization; `caller` and `cause` are filled by later work
(named callers, expiry) and by the R18 cascade. Existing events are backfilled from their
attributes, the same way `models.event_organizations` reads new ones (copied here: a
migration must keep meaning what it meant when it was written).
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

BATCH = 1000


def _organizations(attributes: dict) -> tuple[str | None, str | None]:
    here = attributes.get("organization_id") or attributes.get("partner_id")
    other = attributes.get("other_organization_id") or attributes.get("client_id")
    return here or None, other or None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('organization_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('other_organization_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('caller', sa.String(length=100), server_default='', nullable=False))
        batch_op.add_column(sa.Column('cause', sa.String(length=20), server_default='', nullable=False))
        batch_op.create_index('ix_events_organization', ['organization_id', 'id'], unique=False)
        batch_op.create_index('ix_events_other_organization', ['other_organization_id', 'id'], unique=False)

    events = sa.table('events', sa.column('id', sa.Integer), sa.column('attributes', sa.JSON),
                      sa.column('organization_id', sa.String), sa.column('other_organization_id', sa.String))
    fill = (events.update().where(events.c.id == sa.bindparam('event_id'))
            .values(organization_id=sa.bindparam('here'), other_organization_id=sa.bindparam('other')))
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(sa.select(events.c.id, events.c.attributes)
                                  .where(events.c.id > last).order_by(events.c.id).limit(BATCH)).all()
        if not rows:
            break
        changes = []
        for row in rows:
            here, other = _organizations(row.attributes or {})
            if here or other:
                changes.append({'event_id': row.id, 'here': here, 'other': other})
        if changes:
            connection.execute(fill, changes)
        last = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_other_organization')
        batch_op.drop_index('ix_events_organization')
        batch_op.drop_column('cause')
        batch_op.drop_column('caller')
        batch_op.drop_column('other_organization_id')
        batch_op.drop_column('organization_id')
