"""expiring invitations and access, request ids

Revision ID: 0003
Revises: 0002

Invitations get `expires_at` (when they lapse unless accepted) and, for member invitations,
`access_expires_at`; memberships, connections and assignments get `access_expires_at`;
`request_records` keeps the outcome of mutations sent with a `request_id`.

Existing invitations are backfilled with the default lifetime (14 days): finished and
cancelled ones from their creation; pending ones from the upgrade, so that upgrading does not
end at once invitations that nobody could know would lapse.
"""

import datetime

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

DEFAULT_TTL = datetime.timedelta(days=14)
BATCH = 1000


def _text(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _created(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def upgrade() -> None:
    op.create_table('request_records',
    sa.Column('caller', sa.String(length=100), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('method', sa.String(length=100), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.Column('response', sa.LargeBinary(), nullable=True),
    sa.Column('error_code', sa.String(length=40), nullable=True),
    sa.Column('error_reason', sa.String(length=60), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('caller', 'request_id')
    )
    with op.batch_alter_table('request_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_request_records_created_at'), ['created_at'], unique=False)

    for table in ('memberships', 'connections', 'assignments'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('access_expires_at', sa.String(length=40), nullable=True))
            batch_op.create_index(batch_op.f(f'ix_{table}_access_expires_at'), ['access_expires_at'], unique=False)

    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('access_expires_at', sa.String(length=40), nullable=True))

    invitations = sa.table('invitations', sa.column('id', sa.String), sa.column('status', sa.String),
                           sa.column('created_at', sa.String), sa.column('expires_at', sa.String))
    fill = (invitations.update().where(invitations.c.id == sa.bindparam('invitation_id'))
            .values(expires_at=sa.bindparam('lapses')))
    connection = op.get_bind()
    upgraded = datetime.datetime.now(datetime.UTC)
    last = ''
    while True:
        rows = connection.execute(sa.select(invitations.c.id, invitations.c.status, invitations.c.created_at)
                                  .where(invitations.c.id > last).order_by(invitations.c.id).limit(BATCH)).all()
        if not rows:
            break
        changes = []
        for row in rows:
            start = upgraded if row.status == 'pending' else _created(row.created_at)
            changes.append({'invitation_id': row.id, 'lapses': _text(max(start, _created(row.created_at))
                                                                    + DEFAULT_TTL)})
        connection.execute(fill, changes)
        last = rows[-1].id

    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.alter_column('expires_at', existing_type=sa.String(length=40), nullable=False)
        batch_op.create_index('ix_invitations_status_expires', ['status', 'expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('invitations', schema=None) as batch_op:
        batch_op.drop_index('ix_invitations_status_expires')
        batch_op.drop_column('access_expires_at')
        batch_op.drop_column('expires_at')
    # Invitations that lapsed under 0003 read as cancelled: 0002 knows no other ending.
    op.execute("UPDATE invitations SET status = 'cancelled' WHERE status = 'expired'")
    for table in ('assignments', 'connections', 'memberships'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_access_expires_at'))
            batch_op.drop_column('access_expires_at')
    with op.batch_alter_table('request_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_request_records_created_at'))
    op.drop_table('request_records')
