"""pads questions and events

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:02:19.756210
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pads',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('public_id', sa.String(length=8), nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('language', sa.String(length=32), nullable=False),
    sa.Column('notes', sa.Text(), nullable=False),
    sa.Column('private', sa.Boolean(), nullable=False),
    sa.Column('execution_enabled', sa.Boolean(), nullable=False),
    sa.Column('active_environment_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_pads_org_id_organizations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_pads_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pads')),
    sa.UniqueConstraint('public_id', name=op.f('uq_pads_public_id'))
    )
    with op.batch_alter_table('pads', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pads_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_pads_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pads_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_pads_updated_at'), ['updated_at'], unique=False)

    op.create_table('questions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('owner', sa.String(length=36), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('language', sa.String(length=32), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('contents', sa.Text(), nullable=False),
    sa.Column('solution', sa.Text(), nullable=True),
    sa.Column('candidate_description', sa.Text(), nullable=True),
    sa.Column('shared', sa.Boolean(), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_questions_org_id_organizations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['owner'], ['users.uuid'], name=op.f('fk_questions_owner_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_questions'))
    )
    with op.batch_alter_table('questions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_questions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_questions_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_questions_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_questions_updated_at'), ['updated_at'], unique=False)

    op.create_table('pad_environments',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('pad_id', sa.Integer(), nullable=False),
    sa.Column('question_id', sa.Integer(), nullable=True),
    sa.Column('language', sa.String(length=32), nullable=False),
    sa.Column('contents', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pad_id'], ['pads.id'], name=op.f('fk_pad_environments_pad_id_pads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['question_id'], ['questions.id'], name=op.f('fk_pad_environments_question_id_questions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pad_environments'))
    )
    with op.batch_alter_table('pad_environments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pad_environments_pad_id'), ['pad_id'], unique=False)

    op.create_table('pad_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('pad_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('meta', sa.String(length=255), nullable=True),
    sa.Column('user_name', sa.String(length=255), nullable=False),
    sa.Column('user_email', sa.String(length=254), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pad_id'], ['pads.id'], name=op.f('fk_pad_events_pad_id_pads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pad_events'))
    )
    with op.batch_alter_table('pad_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pad_events_pad_id'), ['pad_id'], unique=False)

    op.create_table('pad_questions',
    sa.Column('pad_id', sa.Integer(), nullable=False),
    sa.Column('question_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['pad_id'], ['pads.id'], name=op.f('fk_pad_questions_pad_id_pads'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['question_id'], ['questions.id'], name=op.f('fk_pad_questions_question_id_questions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pad_id', 'question_id', name=op.f('pk_pad_questions'))
    )


def downgrade() -> None:
    op.drop_table('pad_questions')
    with op.batch_alter_table('pad_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pad_events_pad_id'))

    op.drop_table('pad_events')
    with op.batch_alter_table('pad_environments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pad_environments_pad_id'))

    op.drop_table('pad_environments')
    with op.batch_alter_table('questions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_questions_updated_at'))
        batch_op.drop_index(batch_op.f('ix_questions_owner'))
        batch_op.drop_index(batch_op.f('ix_questions_org_id'))
        batch_op.drop_index(batch_op.f('ix_questions_created_at'))

    op.drop_table('questions')
    with op.batch_alter_table('pads', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pads_updated_at'))
        batch_op.drop_index(batch_op.f('ix_pads_owner'))
        batch_op.drop_index(batch_op.f('ix_pads_org_id'))
        batch_op.drop_index(batch_op.f('ix_pads_created_at'))

    op.drop_table('pads')
