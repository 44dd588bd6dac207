"""images and sandboxes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 07:19:28.053460
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sandboxes',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=False),
    sa.Column('image', sa.String(length=64), nullable=False),
    sa.Column('cmd', sa.Text(), nullable=False),
    sa.Column('timeout', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('return_code', sa.Integer(), nullable=True),
    sa.Column('logs', sa.Text(), nullable=True),
    sa.Column('timed_out', sa.Boolean(), nullable=False),
    sa.Column('truncated', sa.Boolean(), nullable=False),
    sa.Column('killed', sa.Boolean(), nullable=False),
    sa.Column('files_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_sandboxes_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sandboxes'))
    )
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sandboxes_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_sandboxes_status'), ['status'], unique=False)

    op.create_table('images',
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('drive', sa.String(length=36), nullable=False),
    sa.Column('kernel', sa.String(length=512), nullable=False),
    sa.Column('initramfs', sa.String(length=512), nullable=False),
    sa.Column('cmdline', sa.String(length=1024), nullable=False),
    sa.Column('memory_mib', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=False),
    sa.Column('built_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['drive'], ['drives.uuid'], name=op.f('fk_images_drive_drives')),
    sa.PrimaryKeyConstraint('slug', name=op.f('pk_images'))
    )


def downgrade() -> None:
    op.drop_table('images')
    with op.batch_alter_table('sandboxes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sandboxes_status'))
        batch_op.drop_index(batch_op.f('ix_sandboxes_owner'))

    op.drop_table('sandboxes')
