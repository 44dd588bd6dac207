"""tokens projects and workspaces

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:48:58.098733
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=True),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('image', sa.String(length=64), nullable=False),
    sa.Column('config', sa.Text(), nullable=False),
    sa.Column('workspace_init', sa.Text(), nullable=False),
    sa.Column('stack', sa.String(length=128), nullable=False),
    sa.Column('description', sa.String(length=1024), nullable=False),
    sa.Column('template', sa.Boolean(), nullable=False),
    sa.Column('slots', sa.Integer(), nullable=False),
    sa.Column('files_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_projects_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects'))
    )
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_projects_owner'), ['owner'], unique=False)

    op.create_table('tokens',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('hint', sa.String(length=8), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_tokens_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tokens')),
    sa.UniqueConstraint('digest', name=op.f('uq_tokens_digest'))
    )
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tokens_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_tokens_owner'), ['owner'], unique=False)

    op.create_table('workspaces',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=32), nullable=False),
    sa.Column('project_name', sa.String(length=256), nullable=False),
    sa.Column('image', sa.String(length=64), nullable=False),
    sa.Column('state', sa.Integer(), nullable=False),
    sa.Column('pending', sa.String(length=16), nullable=True),
    sa.Column('error_reason', sa.String(length=512), nullable=True),
    sa.Column('config', sa.Text(), nullable=False),
    sa.Column('workspace_init', sa.Text(), nullable=False),
    sa.Column('inactivity_timeout', sa.Integer(), nullable=False),
    sa.Column('workspace_token', sa.String(length=36), nullable=False),
    sa.Column('token_required', sa.Boolean(), nullable=False),
    sa.Column('auto_resume', sa.Boolean(), nullable=False),
    sa.Column('retention_stopped', sa.Integer(), nullable=False),
    sa.Column('retention_total', sa.Integer(), nullable=False),
    sa.Column('slots', sa.Integer(), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('init_failed', sa.Boolean(), nullable=False),
    sa.Column('init_output', sa.LargeBinary(), nullable=True),
    sa.Column('init_error', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('running_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('terminated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_usage', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_workspaces_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workspaces'))
    )
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_workspaces_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_workspaces_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_workspaces_state'), ['state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_workspaces_state'))
        batch_op.drop_index(batch_op.f('ix_workspaces_project_id'))
        batch_op.drop_index(batch_op.f('ix_workspaces_owner'))

    op.drop_table('workspaces')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tokens_owner'))
        batch_op.drop_index(batch_op.f('ix_tokens_kind'))

    op.drop_table('tokens')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_projects_owner'))

    op.drop_table('projects')
