"""catalog search: trigram indexes for ILIKE on product name and description

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 22:30:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database owner may create it.
    # On other databases the postgresql_* options are ignored and the indexes are plain ones.
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
    op.create_index(
        'ix_products_name_trgm', 'products', ['name'],
        postgresql_using='gin', postgresql_ops={'name': 'gin_trgm_ops'},
    )
    op.create_index(
        'ix_products_description_trgm', 'products', ['description'],
        postgresql_using='gin', postgresql_ops={'description': 'gin_trgm_ops'},
    )


def downgrade():
    op.drop_index('ix_products_description_trgm', table_name='products')
    op.drop_index('ix_products_name_trgm', table_name='products')
