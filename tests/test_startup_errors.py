"""What the real commands print when they cannot start: one line that names the file or
the database and says what to do, a non-zero exit, no traceback and no password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import PostgresServer, free_port

PASSWORD = "s3cret-pw"


def cli(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CRYOMESH_")}
    full_env.update({"CRYOMESH_DATA_DIR": str(tmp / "data"), "COLUMNS": "80", **env})
    return subprocess.run(
        [sys.executable, "-m", "cryomesh_cli.main", *args], env=full_env, capture_output=True, text=True, timeout=60
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    text = (out.stdout + out.stderr).strip()
    assert out.returncode == 1, text
    assert "Traceback" not in text and "sqlalchemy" not in text.lower(), text
    assert "\n" not in text, f"more than one line:\n{text}"
    assert text.startswith("error: "), text
    return text.removeprefix("error: ")


@pytest.mark.parametrize("command", [["agent", "run"], ["agent", "enroll", "--hub", "x", "--code", "y"]])
def test_site_toml_syntax_error_names_the_file_and_line(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[agent]\nhub_url = "https://hub.example.org"\nstate_dir = \n\n[discovery]\nbackend = "local"\n')
    message = one_error_line(cli(*command, "--config", str(config), tmp=tmp_path))
    assert message.startswith(f"{config}: line 3: "), message
    assert "invalid value" in message


def test_unterminated_string_at_the_end_of_site_toml(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[agent]\nhub_url = "https://hub.example.org\n')
    message = one_error_line(cli("agent", "run", "--config", str(config), tmp=tmp_path))
    assert message.startswith(f"{config}: line 2"), message


@pytest.mark.parametrize("command", [["hub", "serve", "--no-migrate"], ["admin", "bootstrap", "--name", "x"]])
def test_postgresql_nobody_listens_on(tmp_path: Path, command: list[str]) -> None:
    port = free_port()
    url = f"postgresql+psycopg://cryomesh:{PASSWORD}@127.0.0.1:{port}/cryomesh"
    message = one_error_line(cli(*command, tmp=tmp_path, CRYOMESH_DATABASE_URL=url))
    assert PASSWORD not in message
    shown = f"postgresql+psycopg://cryomesh:***@127.0.0.1:{port}/cryomesh"
    assert message.startswith(f"cannot reach the database at {shown} "), message
    assert "(connection refused)" in message and "is PostgreSQL running" in message
    assert "CRYOMESH_DATABASE_URL" in message


def test_postgresql_database_that_does_not_exist(tmp_path: Path, pg: PostgresServer) -> None:
    url = pg.url("no_such_cryomesh_db")
    message = one_error_line(cli("hub", "serve", tmp=tmp_path, CRYOMESH_DATABASE_URL=url))
    assert 'database "no_such_cryomesh_db" does not exist' in message
    assert "createdb" in message


def test_sqlite_path_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database's folder should be")
    path = blocker / "hub.db"
    message = one_error_line(cli("hub", "migrate", tmp=tmp_path, CRYOMESH_DATABASE_URL=f"sqlite:///{path}"))
    assert message.startswith(f"cannot open the SQLite database at {path} (not a directory: {blocker})"), message
    assert "CRYOMESH_DATABASE_URL" in message


def test_hub_serve_refuses_several_workers_on_sqlite(tmp_path: Path) -> None:
    message = one_error_line(cli("hub", "serve", "--workers", "2", tmp=tmp_path, CRYOMESH_PORT=str(free_port())))
    assert message.startswith("--workers 2 needs PostgreSQL: "), message
    assert "CRYOMESH_DATABASE_URL" in message
    assert not (tmp_path / "data" / "hub.db").exists(), "refused before touching the database"
