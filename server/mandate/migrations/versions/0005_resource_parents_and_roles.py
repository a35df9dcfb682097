"""resources the policy declares: parents, and roles on one resource

Revision ID: 0005
Revises: 0004

`resources` (and its history) get `parent_type` and `parent_id`: a resource may sit under another
one (NULL: a top-level resource, as every resource before this revision). `resource_roles` holds
the roles given on one resource to one user (GrantResourceRole), with its history table like every
fact table (0004); a revoked role stays with `granted` false.
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _resource_role_columns(history: bool):
    return [
        sa.Column('resource_type', sa.String(length=40), nullable=False, primary_key=True),
        sa.Column('resource_id', sa.String(length=200), nullable=False, primary_key=True),
        sa.Column('user_id', sa.String(length=40), nullable=False, primary_key=True),
        sa.Column('role', sa.String(length=100), nullable=False, primary_key=True),
        sa.Column('granted', sa.Boolean(), nullable=False),
        sa.Column('granted_by', sa.String(length=40), nullable=False),
        sa.Column('access_expires_at', sa.String(length=40), nullable=True),
        sa.Column('revision', sa.BigInteger(), nullable=False, primary_key=history),
    ]


def upgrade() -> None:
    for table in ('resources', 'resources_history'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('parent_type', sa.String(length=40), nullable=True))
            batch.add_column(sa.Column('parent_id', sa.String(length=200), nullable=True))
    op.create_index('ix_resources_parent', 'resources', ['parent_type', 'parent_id'], unique=False)

    op.create_table('resource_roles', *_resource_role_columns(False),
                    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ))
    op.create_index(op.f('ix_resource_roles_user_id'), 'resource_roles', ['user_id'], unique=False)
    op.create_index(op.f('ix_resource_roles_revision'), 'resource_roles', ['revision'], unique=False)
    op.create_index(op.f('ix_resource_roles_access_expires_at'), 'resource_roles', ['access_expires_at'],
                    unique=False)
    op.create_table('resource_roles_history', *_resource_role_columns(True),
                    sa.Column('ended_revision', sa.BigInteger(), nullable=True))
    op.create_index(op.f('ix_resource_roles_history_ended_revision'), 'resource_roles_history',
                    ['ended_revision'], unique=False)
    op.create_index('ix_resource_roles_history_revision', 'resource_roles_history', ['revision'], unique=False)
    op.create_index('ix_resource_roles_history_lookup', 'resource_roles_history', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_table('resource_roles_history')
    op.drop_index(op.f('ix_resource_roles_access_expires_at'), table_name='resource_roles')
    op.drop_index(op.f('ix_resource_roles_revision'), table_name='resource_roles')
    op.drop_index(op.f('ix_resource_roles_user_id'), table_name='resource_roles')
    op.drop_table('resource_roles')
    op.drop_index('ix_resources_parent', table_name='resources')
    for table in ('resources_history', 'resources'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('parent_id')
            batch.drop_column('parent_type')
