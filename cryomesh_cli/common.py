"""Options and helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import yaml
from pydantic import ValidationError

from cryomesh_cli.client import CliError, HubSession, load_profile
from cryomesh_cli.render import console

if TYPE_CHECKING:
    from pydantic import BaseModel

HubOpt = Annotated[str | None, typer.Option("--hub", help="Hub URL (or CRYOMESH_HUB_URL)")]
IdOpt = Annotated[str | None, typer.Option("--client-id", help="Client id (or CRYOMESH_CLIENT_ID)")]
SecretOpt = Annotated[str | None, typer.Option("--client-secret", help="Client secret (or CRYOMESH_CLIENT_SECRET)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")]
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The agent's site.toml")]


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


def session(hub: str | None, client_id: str | None, client_secret: str | None) -> HubSession:
    try:
        return HubSession(load_profile(hub, client_id, client_secret))
    except CliError as exc:
        fail(str(exc))


def call(s: HubSession, method: str, path: str, **kwargs: Any) -> Any:
    try:
        return s.call(method, path, **kwargs)
    except CliError as exc:
        fail(str(exc))


def hub_call(creds: tuple[str | None, str | None, str | None], method: str, path: str, **kwargs: Any) -> Any:
    """One authenticated call in its own session, for commands that make just one."""
    with session(*creds) as s:
        return call(s, method, path, **kwargs)


def load_document(path: Path, schema: type[BaseModel] | None = None) -> Any:
    """A YAML or JSON file (JSON is YAML). With ``schema``, it is checked here first, so a
    typo is one line naming the file and the field (``spec.yaml: resources.cpu: unknown
    field; did you mean 'cpus'?``) before anything is sent; the hub checks it again."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read {path}: {exc}")
    if schema is not None:
        from pydantic import ValidationError

        from shared.validation import describe_errors

        try:
            schema.model_validate(document)
        except ValidationError as exc:
            fail(f"{path}: {describe_errors(exc, schema)}")
    return jsonable(document)


def jsonable(document: Any) -> Any:
    """The document as JSON can carry it: YAML's dates and times (``as_of: 2026-11-01``,
    ``deadline: 2027-01-31T18:00:00+09:00``) become ISO 8601 strings."""
    return json.loads(json.dumps(document, default=lambda o: o.isoformat() if hasattr(o, "isoformat") else str(o)))


def agent_settings(config: Path | None) -> Any:
    """The agent's settings from site.toml (or CRYOMESH_AGENT_*); a file that is missing or
    wrong is one line (site_agent.config names the file, the line or the key)."""
    from site_agent.config import load_settings

    try:
        return load_settings(config)
    except (FileNotFoundError, ValueError) as exc:  # ConfigError is a ValueError
        fail(str(exc))


def validation_text(exc: ValidationError, what: str) -> str:
    """A pydantic error as one line per problem (where: what is wrong), without its URLs or input dumps."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = "missing" if err.get("type") == "missing" else str(err.get("msg", "invalid"))
        lines.append(f"  {where}: {msg}" if where else f"  {msg}")
    if len(lines) == 1:
        return f"{what}: {lines[0].strip()}"
    return f"{what}:\n" + "\n".join(lines)
