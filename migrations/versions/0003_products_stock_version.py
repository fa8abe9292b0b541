"""products.stock_version: a counter every stock change increments, so the catalog cache orders stock writes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 12:00:00.000000

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    # A constant default: PostgreSQL 11+ adds the column without rewriting the table.
    with op.batch_alter_table('products') as batch:
        batch.add_column(sa.Column('stock_version', sa.BigInteger(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('products') as batch:
        batch.drop_column('stock_version')
