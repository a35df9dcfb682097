"""access history: versions of the fact rows, and every policy that served

Revision ID: 0004
Revises: 0003

Each fact table gets a `<table>_history` table: the same columns, the revision in the primary
key, and `ended_revision` (the revision that replaced the version; NULL while current). The
upgrade copies every current row in as a current version, and the history starts at the
revision of the upgrade (`history_horizon`): what happened before was never recorded.
`policy_texts` and `policy_periods` keep every policy that serves from now on.
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

FACT_TABLES = ('users', 'organizations', 'memberships', 'resources', 'connections', 'assignments',
               'organization_links')
# The look-ups of one decision about the past, beside each history table's primary key.
LOOKUPS = {'memberships': ('user_id',), 'connections': ('client_id',), 'assignments': ('user_id', 'client_id')}


def upgrade() -> None:
    bind = op.get_bind()
    for name in FACT_TABLES:
        table = sa.Table(name, sa.MetaData(), autoload_with=bind)
        history = f'{name}_history'
        op.create_table(
            history,
            *[sa.Column(c.name, c.type, nullable=c.nullable, primary_key=c.primary_key or c.name == 'revision')
              for c in table.columns],
            sa.Column('ended_revision', sa.BigInteger(), nullable=True),
        )
        op.create_index(op.f(f'ix_{history}_ended_revision'), history, ['ended_revision'], unique=False)
        op.create_index(f'ix_{history}_revision', history, ['revision'], unique=False)
        if name in LOOKUPS:
            op.create_index(f'ix_{history}_lookup', history, list(LOOKUPS[name]), unique=False)
        columns = ', '.join(c.name for c in table.columns)
        op.execute(f'INSERT INTO {history} ({columns}) SELECT {columns} FROM {name}')

    op.create_table('history_horizon',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kept_from_revision', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute('INSERT INTO history_horizon (id, kept_from_revision) SELECT 1, value FROM revision_counter')

    op.create_table('policy_texts',
    sa.Column('policy_version', sa.String(length=64), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('policy_version')
    )
    op.create_table('policy_periods',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('policy_version', sa.String(length=64), nullable=False),
    sa.Column('from_revision', sa.BigInteger(), nullable=False),
    sa.Column('from_at', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['policy_version'], ['policy_texts.policy_version'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_policy_periods_from_at'), 'policy_periods', ['from_at'], unique=False)
    op.create_index(op.f('ix_policy_periods_from_revision'), 'policy_periods', ['from_revision'], unique=False)
    op.create_index('ix_events_occurred_at', 'events', ['occurred_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_events_occurred_at', table_name='events')
    op.drop_index(op.f('ix_policy_periods_from_revision'), table_name='policy_periods')
    op.drop_index(op.f('ix_policy_periods_from_at'), table_name='policy_periods')
    op.drop_table('policy_periods')
    op.drop_table('policy_texts')
    op.drop_table('history_horizon')
    for name in reversed(FACT_TABLES):
        op.drop_table(f'{name}_history')
