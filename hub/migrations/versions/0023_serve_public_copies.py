"""serve public copies: a holder's consent to serve copies of others' public data

``share_policies.serve_public_copies``: public datasets a site holds (owned by other sites)
may be copied from there to other sites without a person deciding (hub/datasets/shares.py
``relays``). Until now ``auto_approve_public`` said that too, besides approving requests for
the site's own public datasets; the two consents are apart from now on.

Existing rows keep what they allowed: ``serve_public_copies`` is set from
``auto_approve_public``. New policies serve nothing unless their admin says so (the models'
default, false).

Downgrade: the old schema has one field for both consents, so it keeps the consent only
where both were given (``auto_approve_public`` and ``serve_public_copies``): no data leaves a
site whose admin did not let it leave. A site that approved requests for its own public
datasets but served no copies of others' then sees those requests wait for its admin.

Revision ID: 0023
Revises: 0022
"""

from alembic import op
import sqlalchemy as sa


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

policies = sa.table(
    'share_policies', sa.column('auto_approve_public', sa.Boolean), sa.column('serve_public_copies', sa.Boolean)
)


def upgrade() -> None:
    with op.batch_alter_table('share_policies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('serve_public_copies', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(policies.update().values(serve_public_copies=policies.c.auto_approve_public))
    # The default was for the rows already there; new rows get theirs from the model.
    with op.batch_alter_table('share_policies', schema=None) as batch_op:
        batch_op.alter_column('serve_public_copies', server_default=None)


def downgrade() -> None:
    op.execute(policies.update().where(policies.c.serve_public_copies == sa.false()).values(auto_approve_public=sa.false()))
    with op.batch_alter_table('share_policies', schema=None) as batch_op:
        batch_op.drop_column('serve_public_copies')
