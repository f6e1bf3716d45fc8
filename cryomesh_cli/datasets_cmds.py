"""``cryomesh datasets ...``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cryomesh_cli.common import (
    ConfigOpt,
    HubOpt,
    IdOpt,
    JsonOpt,
    SecretOpt,
    agent_settings,
    fail,
    hub_call,
    load_document,
)
from cryomesh_cli.render import Col, console, fitted_table, print_json
from shared.schemas.datasets import Visibility
from shared.units import human_bytes

datasets_app = typer.Typer(help="The dataset registry.", no_args_is_help=True)


async def send_pictures(client: Any, dataset_id: str, path: Path) -> None:
    """A few thumbnails of the new dataset (particles, or class averages) for its page; made
    here, sent as small PNGs. A dataset without images, or a failure, leaves it without."""
    from shared.schemas.pictures import PictureSet
    from site_agent.errors import HubError
    from site_agent.pictures import dataset_pictures

    try:
        pictures = dataset_pictures(path)
        if pictures:
            body = PictureSet(pictures=pictures).model_dump(mode="json")
            await client.request("PUT", f"/api/v1/datasets/{dataset_id}/pictures", json=body)
    except (OSError, ValueError, RuntimeError, IndexError, HubError) as exc:
        typer.echo(f"registered, but its thumbnails were not sent: {exc}", err=True)


@datasets_app.command("register")
def register(
    config: ConfigOpt,
    path: Annotated[Path | None, typer.Option("--path", help="The dataset's directory, on this site")] = None,
    s3: Annotated[
        str | None, typer.Option("--s3", help="Or the dataset's objects: s3://bucket/prefix in a bucket of this site")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Title (or in --metadata)")] = None,
    metadata: Annotated[Path | None, typer.Option(help="YAML/JSON with sample, instrument, detector, acquisition, ...")] = None,
    visibility: Annotated[Visibility | None, typer.Option(help="Who may see it; default private (your institution only)")] = None,
    checksum: Annotated[str, typer.Option(help="crc64nvme (fast, S3's) or sha256")] = "crc64nvme",
    as_json: JsonOpt = False,
) -> None:
    """Scan a directory on this site, checksum every file, read MRC headers, and register it
    with the hub through this site's agent credentials. The manifest goes in pages (of up to
    10,000 files), sent as the files are checksummed, so a directory of any size registers
    in bounded memory. It is private to your institution unless --visibility (or visibility:
    in --metadata) says network or public; change it later with `cryomesh datasets
    set-visibility`. A directory is registered once: again is refused.

    With --s3 instead of --path, the objects below s3://bucket/prefix/ (read with the site's
    [transfers] S3 settings and the agent's AWS credentials) are the dataset; DRS clients get
    them through URLs the agent signs when the bucket is in [drs] presign_buckets."""
    from pydantic import ValidationError
    from rich.console import Console

    from shared.schemas.datasets import ChecksumAlgorithm, DatasetUploadCreate
    from shared.validation import describe_errors
    from site_agent.client import HubClient
    from site_agent.credentials import load_credentials, load_key
    from site_agent.dataset_upload import LocalSource, Source, survey, survey_source, upload
    from site_agent.datasets import resolve_root
    from site_agent.errors import HubError, HubRefused

    meta: dict[str, Any] = dict(load_document(metadata) or {}) if metadata else {}
    if title:
        meta["title"] = title
    if visibility:
        meta["visibility"] = visibility.value
    if not meta.get("title"):
        fail('a dataset needs a title: give --title "Apoferritin, Krios G4" or put title: in the --metadata file')
    if checksum not in {a.value for a in ChecksumAlgorithm}:
        fail(f"--checksum {checksum!r}: use crc64nvme or sha256")
    if (path is None) == (s3 is None):
        fail("give the dataset's directory (--path DIR) or its objects (--s3 s3://bucket/prefix), one of them")
    settings = agent_settings(config)
    algorithm = ChecksumAlgorithm(checksum)
    root: Path | None = None
    source: Source
    s3_errors: tuple[type[Exception], ...] = ()  # S3 refusals, unreachable endpoint, no credentials
    if s3 is not None:
        from botocore.exceptions import BotoCoreError, ClientError

        s3_errors = (BotoCoreError, ClientError)
    try:
        if s3 is not None:
            from site_agent.s3_datasets import S3Source

            source = S3Source(settings.transfers, s3)
            head = survey_source(source, source.location, meta, algorithm)
        else:
            assert path is not None
            root = resolve_root(path)
            source = LocalSource(root)
            head = survey(root, meta, algorithm)
    except ValidationError as exc:
        fail(f"{metadata or 'the dataset description'}: {describe_errors(exc, DatasetUploadCreate)}")
    except (OSError, ValueError) as exc:
        fail(str(exc))
    except s3_errors as exc:
        fail(f"{s3}: {exc}")
    progress = Console(stderr=True)

    def show_progress(up: dict[str, Any]) -> None:
        if up["file_count"] > up["max_page_files"]:
            progress.print(f"sent {up['received_files']}/{up['file_count']} files ({human_bytes(up['received_bytes'])})")

    async def send() -> Any:
        creds = load_credentials(settings.agent.state_dir)
        client = HubClient(
            settings.agent.hub_url or creds.hub_url, creds.client_id, load_key(settings.agent.state_dir), creds.token_endpoint
        )
        try:
            ds = await upload(client, source, head, on_page=show_progress)
            if root is not None:
                await send_pictures(client, ds["id"], root)
            return ds
        finally:
            await client.aclose()

    try:
        ds = asyncio.run(send())
    except HubRefused as exc:
        problems = exc.detail.split("; ") if exc.error == "ValidationError" else [exc.detail]
        said = f"registration refused ({exc.status} {exc.error})"
        fail(f"{said}: {problems[0]}" if len(problems) == 1 else said + ":" + "".join(f"\n  {p}" for p in problems))
    except (HubError, FileNotFoundError) as exc:
        fail(f"registration refused: {exc}")
    except (OSError, ValueError) as exc:
        fail(str(exc))
    except s3_errors as exc:
        fail(f"{s3}: {exc}")
    if as_json:
        print_json(ds)
        return
    console.print(
        f"registered [bold]{ds['id']}[/bold] '{ds['title']}': {ds['file_count']} files, {human_bytes(ds['total_bytes'])}, "
        f"replica AVAILABLE at {ds['owner_site']}"
    )


def datasets_table(items: list[dict[str, Any]]) -> Table:
    cols = (
        Col("id", keep=True),
        Col("title"),
        Col("type", drop=4),
        Col("sample", drop=3),
        Col("pixel Å", drop=3),
        Col("files", drop=5),
        Col("size", drop=2),
        Col("visibility", drop=1),
        Col("replicas", drop=1),
    )
    rows = []
    for d in items:
        reps = ", ".join(f"{r['site']} {r['state']}" for r in d["replicas"])
        px = d["acquisition"].get("pixel_size_a") or next(
            (s.get("pixel_size_a") for s in d["image_sets"] if s.get("pixel_size_a")), None
        )
        rows.append(
            (
                d["id"],
                d["title"],
                d["experiment_type"],
                (d.get("sample") or {}).get("name", "-"),
                f"{px:g}" if px else "-",
                str(d["file_count"]),
                human_bytes(d["total_bytes"]),
                d["visibility"],
                reps,
            )
        )
    return fitted_table(cols, rows, title=f"{len(items)} dataset(s)")


@datasets_app.command("list")
def list_datasets(
    q: Annotated[str | None, typer.Option(help="Text in title, sample or description")] = None,
    experiment_type: Annotated[str | None, typer.Option()] = None,
    site: Annotated[str | None, typer.Option(help="Held (AVAILABLE) at this site")] = None,
    pixel_size_min: Annotated[float | None, typer.Option()] = None,
    pixel_size_max: Annotated[float | None, typer.Option()] = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Datasets you may see."""
    params = {
        "q": q,
        "experiment_type": experiment_type,
        "site": site,
        "pixel_size_min": pixel_size_min,
        "pixel_size_max": pixel_size_max,
    }
    page = hub_call((hub, client_id, client_secret), "GET", "/api/v1/datasets", params=params)
    print_json(page) if as_json else console.print(datasets_table(page["items"]))


@datasets_app.command("show")
def show(
    dataset_id: str, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None, as_json: JsonOpt = False
) -> None:
    """One dataset: metadata, image sets, replicas."""
    d = hub_call((hub, client_id, client_secret), "GET", f"/api/v1/datasets/{dataset_id}")
    if as_json:
        print_json(d)
        return
    console.print(datasets_table([d]))
    sets = Table("category", "format", "count", "frames", "size px", "pixel Å", "pattern", title="image sets")
    for s in d["image_sets"]:
        dims = f"{s['width']}x{s['height']}" if s.get("width") else "-"
        sets.add_row(
            s["category"],
            s["format"],
            str(s["count"]),
            str(s.get("frames_per_image") or "-"),
            dims,
            str(s.get("pixel_size_a") or "-"),
            s.get("file_pattern") or "-",
        )
    console.print(sets)


@datasets_app.command("set-visibility")
def set_visibility(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id, or its EMPIAR/EMDB accession")],
    visibility: Annotated[
        Visibility, typer.Argument(help="private: your institution only; network: everyone signed in; public: everyone")
    ],
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change who may see a dataset (the owner site's admin; network admins)."""
    d = hub_call(
        (hub, client_id, client_secret), "PATCH", f"/api/v1/datasets/{dataset_id}", json_body={"visibility": visibility.value}
    )
    if as_json:
        print_json(d)
        return
    console.print(f"dataset [bold]{d['id']}[/bold] '{d['title']}' is now {d['visibility']}")


@datasets_app.command("request")
def request(
    dataset_id: str,
    to: Annotated[str, typer.Option("--to", help="The site to copy it to")],
    purpose: Annotated[str, typer.Option(help="Why you need it (the owner sees this)")],
    lifetime_days: Annotated[int, typer.Option(help="How long the copy may be kept")] = 90,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask for a dataset to be copied to a site; its owner site and the receiving site decide
    (each by its admin or its share policy)."""
    body = {"dest_site": to, "purpose": purpose, "lifetime_days": lifetime_days}
    req = hub_call((hub, client_id, client_secret), "POST", f"/api/v1/datasets/{dataset_id}/share-requests", json_body=body)
    if as_json:
        print_json(req)
        return
    console.print(f"share request [bold]{req['id']}[/bold]: {share_state(req)} ({req['dataset']} -> {req['dest_site']})")


shares_app = typer.Typer(help="Share requests: who asked for which data, and who decided.", no_args_is_help=True)


def share_state(r: dict[str, Any]) -> str:
    """The state, and for a pending request whose decision it waits for (owner, receiver)."""
    if r["state"] != "pending":
        return str(r["state"])
    waiting = [side for side in ("owner", "receiver") if r[f"{side}_decision"] == "pending"]
    return f"pending: {', '.join(waiting)}"


def shares_table(rows: list[dict[str, Any]]) -> Table:
    cols = (
        Col("id", keep=True),
        Col("dataset", keep=True, drop=2),
        Col("from", keep=True, drop=3),
        Col("to", keep=True, drop=3),
        Col("requested by", drop=4),
        Col("state"),
        Col("decided by", drop=5),
        Col("purpose", drop=1),
    )
    cells = [
        (r["id"], r["dataset"], r["owner_site"], r["dest_site"], r["requested_by"], share_state(r), r["decided_by"] or "-",
         r["purpose"][:120])
        for r in rows
    ]  # fmt: skip
    return fitted_table(cols, cells, title=f"{len(rows)} share request(s)")


@shares_app.command("list")
def shares_list(
    state: Annotated[str | None, typer.Option(help="pending, approved, denied, revoked, expired")] = None,
    awaiting_me: Annotated[bool, typer.Option("--awaiting-me", help="Only requests waiting for your decision")] = False,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Requests you made, may decide, or receive."""
    params = {"state": state, "awaiting": "me" if awaiting_me else None}
    rows = hub_call((hub, client_id, client_secret), "GET", "/api/v1/share-requests", params=params)
    print_json(rows) if as_json else console.print(shares_table(rows))


def _decide(
    request_id: str,
    verb: str,
    reason: str | None,
    creds: tuple[str | None, str | None, str | None],
    side: str | None = None,
) -> None:
    if side not in (None, "owner", "receiver"):
        fail(f"--side is owner or receiver, not {side!r}")
    params = {"side": side} if side else None
    r = hub_call(creds, "POST", f"/api/v1/share-requests/{request_id}/{verb}", json_body={"reason": reason}, params=params)
    console.print(f"share request {r['id']}: {share_state(r)}")


ReasonOpt = Annotated[str | None, typer.Option(help="Why (kept in the audit trail)")]
SideOpt = Annotated[
    str | None,
    typer.Option(
        "--side",
        help="owner or receiver: decide only for this side (a network admin decides for both, a site admin for their site's)",
    ),
]


@shares_app.command("approve")
def shares_approve(
    request_id: str,
    reason: ReasonOpt = None,
    side: SideOpt = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """Approve for your side: the owner site's admin for the owner, the receiving site's admin
    for the receiver, network admins for both. The copy starts once both have approved."""
    _decide(request_id, "approve", reason, (hub, client_id, client_secret), side)


@shares_app.command("deny")
def shares_deny(
    request_id: str,
    reason: ReasonOpt = None,
    side: SideOpt = None,
    hub: HubOpt = None,
    client_id: IdOpt = None,
    client_secret: SecretOpt = None,
) -> None:
    """Deny for your side (the owner or receiving site's admin; network admins)."""
    _decide(request_id, "deny", reason, (hub, client_id, client_secret), side)


@shares_app.command("revoke")
def shares_revoke(
    request_id: str, reason: ReasonOpt = None, hub: HubOpt = None, client_id: IdOpt = None, client_secret: SecretOpt = None
) -> None:
    """Withdraw a request or an approval (the requester, either site's admin, network admins);
    the transfer is cancelled and the copy retired."""
    _decide(request_id, "revoke", reason, (hub, client_id, client_secret))
