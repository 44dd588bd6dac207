"""servers, drive claims and resources

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 07:07:57.358101
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resources',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('type', sa.String(length=8), nullable=False),
    sa.Column('resource', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_resources_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_resources')),
    sa.UniqueConstraint('type', 'resource', name=op.f('uq_resources_type'))
    )
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resources_owner'), ['owner'], unique=False)

    op.create_table('servers',
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('desired', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('macs', sa.JSON(), nullable=False),
    sa.Column('vnc_port', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_servers_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_servers'))
    )
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_servers_owner'), ['owner'], unique=False)

    op.create_table('drive_claims',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('drive', sa.String(length=36), nullable=False),
    sa.Column('server', sa.String(length=36), nullable=False),
    sa.Column('device', sa.String(length=16), nullable=False),
    sa.Column('readonly', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['drive'], ['drives.uuid'], name=op.f('fk_drive_claims_drive_drives'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['server'], ['servers.uuid'], name=op.f('fk_drive_claims_server_servers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drive_claims')),
    sa.UniqueConstraint('server', 'device', name=op.f('uq_drive_claims_server'))
    )
    with op.batch_alter_table('drive_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drive_claims_drive'), ['drive'], unique=False)
        batch_op.create_index(batch_op.f('ix_drive_claims_server'), ['server'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('drive_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drive_claims_server'))
        batch_op.drop_index(batch_op.f('ix_drive_claims_drive'))

    op.drop_table('drive_claims')
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_servers_owner'))

    op.drop_table('servers')
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resources_owner'))

    op.drop_table('resources')
