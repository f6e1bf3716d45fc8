"""receiving site consent

A share request now needs two decisions: the owner site's and the receiving site's. Adds
the receiving side's decision to ``share_requests`` (and an explicit ``owner_decision``,
and ``job_id`` for the copies the broker asks for to stage a job's input), and the
receiving rules to ``share_policies``.

Existing rows:
- ``job_id``: from the purpose ``input of job <id>`` that staging wrote, where that job exists.
- ``owner_decision``: ``approved`` where the owner decided and did not deny (approved,
  expired, and revoked-after-approval rows), ``denied`` for denied rows, else ``pending``.
- ``receiver_decision``: rows that were approved (approved, expired, revoked after the
  approval) count as consented, by ``hub``, with an audit event saying why. Pending rows
  get what the new default receiving policy says: accepted where the requester's
  institution is the receiving site's own, or where the request stages an input of a job
  waiting at that site; otherwise they wait for the receiving site's admin (audited as
  ``receiver-held``). Denied rows and rows revoked before any decision stay ``pending``:
  the request is over and nobody decided for the receiver.
- ``share_policies``: accept copies asked for by the site's own institution and the inputs
  of jobs placed there; no other institutions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:30:00.000000
"""

from datetime import UTC, datetime

from alembic import op
import sqlalchemy as sa
import sqlmodel
import hub.types


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

MIGRATED = "approved before the receiving site's consent was asked for (migration 0009)"


def upgrade() -> None:
    with op.batch_alter_table('share_policies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accept_own_institution', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('accept_institutions', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('accept_job_inputs', sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table('share_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.add_column(sa.Column('owner_decision', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False,
                                      server_default='pending'))
        batch_op.add_column(sa.Column('receiver_decision', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False,
                                      server_default='pending'))
        batch_op.add_column(sa.Column('receiver_auto_approved', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('receiver_decided_by', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
        batch_op.add_column(sa.Column('receiver_decided_at', hub.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('receiver_decision_reason', sa.Text(), nullable=True))

    _migrate_rows()

    # The defaults were for the rows already there; new rows get theirs from the models.
    with op.batch_alter_table('share_policies', schema=None) as batch_op:
        for name in ('accept_own_institution', 'accept_institutions', 'accept_job_inputs'):
            batch_op.alter_column(name, server_default=None)
    with op.batch_alter_table('share_requests', schema=None) as batch_op:
        for name in ('owner_decision', 'receiver_decision', 'receiver_auto_approved'):
            batch_op.alter_column(name, server_default=None)


def _migrate_rows() -> None:
    conn = op.get_bind()
    now = datetime.now(UTC)
    reqs = sa.table(
        'share_requests',
        sa.column('id', sa.String), sa.column('state', sa.String), sa.column('decided_by', sa.String),
        sa.column('decided_at', hub.types.UTCDateTime(timezone=True)), sa.column('requester_institution', sa.String),
        sa.column('purpose', sa.Text), sa.column('dest_site_id', sa.Integer), sa.column('owner_decision', sa.String),
        sa.column('receiver_decision', sa.String), sa.column('receiver_auto_approved', sa.Boolean),
        sa.column('receiver_decided_by', sa.String), sa.column('receiver_decided_at', hub.types.UTCDateTime(timezone=True)),
        sa.column('receiver_decision_reason', sa.Text), sa.column('job_id', sa.String),
    )
    jobs = sa.table('jobs', sa.column('id', sa.String))
    sites = sa.table('sites', sa.column('id', sa.Integer), sa.column('name', sa.String), sa.column('institution', sa.String))
    attempts = sa.table('attempts', sa.column('job_id', sa.String), sa.column('site_id', sa.Integer),
                        sa.column('state', sa.String))
    events = sa.table(
        'share_events',
        sa.column('request_id', sa.String), sa.column('at', hub.types.UTCDateTime(timezone=True)),
        sa.column('actor', sa.String), sa.column('action', sa.String), sa.column('reason', sa.Text),
    )

    conn.execute(reqs.update().where(reqs.c.state == 'denied').values(owner_decision='denied'))
    conn.execute(
        reqs.update().where(reqs.c.state != 'denied', reqs.c.decided_by.is_not(None)).values(owner_decision='approved')
    )
    known_jobs = {job_id for (job_id,) in conn.execute(sa.select(jobs.c.id))}
    staging = {
        (job_id, site_id)
        for job_id, site_id in conn.execute(sa.select(attempts.c.job_id, attempts.c.site_id).where(attempts.c.state == 'staging'))
    }
    rows = conn.execute(
        sa.select(reqs.c.id, reqs.c.state, reqs.c.decided_by, reqs.c.decided_at, reqs.c.requester_institution,
                  reqs.c.purpose, reqs.c.dest_site_id, sites.c.name, sites.c.institution)
        .select_from(reqs.join(sites, sites.c.id == reqs.c.dest_site_id))
    ).all()
    for rid, state, decided_by, decided_at, inst, purpose, dest_id, dest_name, dest_inst in rows:
        job = purpose[len('input of job '):] if purpose.startswith('input of job ') else None
        if job is not None and job in known_jobs:
            conn.execute(reqs.update().where(reqs.c.id == rid).values(job_id=job))
        actor, reason = None, None
        if state in ('approved', 'expired') or (state == 'revoked' and decided_by is not None):
            actor, reason, at = 'hub', MIGRATED, decided_at or now
        elif state == 'pending':
            if job is not None and (job, dest_id) in staging:
                reason = f"input of job {job}, which the broker placed here under the site's lending policy"
            elif inst is not None and inst == dest_inst:
                reason = f"asked for by its own institution {inst}"
            if reason is None:
                conn.execute(events.insert().values(
                    request_id=rid, at=now, actor=f"policy of site {dest_name}", action='receiver-held',
                    reason=f"its policy does not accept copies asked for by institution {inst or '(none)'}; "
                    "the receiving site's admin must decide",
                ))  # fmt: skip
                continue
            actor, at = f"policy of site {dest_name}", now
        if actor is None:
            continue
        conn.execute(
            reqs.update().where(reqs.c.id == rid).values(
                receiver_decision='approved', receiver_auto_approved=True, receiver_decided_by=actor,
                receiver_decided_at=at, receiver_decision_reason=reason,
            )
        )  # fmt: skip
        conn.execute(events.insert().values(request_id=rid, at=at, actor=actor, action='receiver-auto-approved', reason=reason))


def downgrade() -> None:
    with op.batch_alter_table('share_requests', schema=None) as batch_op:
        batch_op.drop_column('receiver_decision_reason')
        batch_op.drop_column('receiver_decided_at')
        batch_op.drop_column('receiver_decided_by')
        batch_op.drop_column('receiver_auto_approved')
        batch_op.drop_column('receiver_decision')
        batch_op.drop_column('owner_decision')
        batch_op.drop_column('job_id')
    with op.batch_alter_table('share_policies', schema=None) as batch_op:
        batch_op.drop_column('accept_job_inputs')
        batch_op.drop_column('accept_institutions')
        batch_op.drop_column('accept_own_institution')
