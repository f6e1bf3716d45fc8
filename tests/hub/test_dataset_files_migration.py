"""Migration 0011 moves manifests from JSON values (``dataset_manifests``) into rows
(``dataset_files``) and back, on both databases, with a dataset registered by the real hub."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from hub.db import alembic_config, make_engine, migrate
from tests.helpers import running_hub
from tests.hub.test_dataset_uploads import PATHS, digest_of, files_for


def test_manifests_move_to_rows_and_back(db_url: str, tmp_path: Path) -> None:
    files = files_for(PATHS)
    body = {
        "title": "before the migration",
        "location": "/data/m",
        "manifest": {"algorithm": "crc64nvme", "files": files, "digest": digest_of(files)},
    }
    with running_hub(db_url, tmp_path / "data") as hub:
        hub.create_site("alpha")
        agent = hub.enroll_agent("alpha", tmp_path / "a")
        with hub.http(hub.agent_token(agent)) as c:
            r = c.post("/api/v1/datasets", json=body)
        assert r.status_code == 201, r.text
        ds = r.json()["id"]

    in_order = sorted(files, key=lambda f: f["path"])
    command.downgrade(alembic_config(db_url), "0010")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(sa.text("SELECT manifest FROM dataset_manifests WHERE dataset_id = :d"), {"d": ds}).scalar_one()
            manifest = json.loads(raw) if isinstance(raw, str) else raw
            assert manifest == {"algorithm": "crc64nvme", "files": in_order, "digest": digest_of(files)}
            assert "dataset_files" not in sa.inspect(conn).get_table_names()
        migrate(db_url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT path, size, checksum FROM dataset_files WHERE dataset_id = :d"), {"d": ds}).all()
            moved = [{"path": p, "size": n, "checksum": c} for p, n, c in rows]
            assert sorted(moved, key=lambda f: f["path"]) == in_order
            assert "dataset_manifests" not in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()
