"""Signing GET URLs of objects in this site's S3 buckets for the hub's DRS clients.

The hub holds no storage credentials; when a DRS client asks for the ``https`` access of a
file whose replica is in one of this site's buckets, the hub passes the request on in the
agent's long-poll for work (``AssignmentBatch.presign``, see ``shared.schemas.presign``).
The agent signs only objects in buckets its admin lists (``[drs] presign_buckets``: listing
one says "any researcher the dataset's visibility admits may read what this bucket holds
for the datasets registered in it") and gives URLs of at most ``[drs] presign_ttl_s``. It
signs with the site's ``[transfers]`` S3 settings and the agent's usual AWS credentials;
signing is a local computation, no request to S3. Requests are answered as the poll
returns them, before its offers are taken.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.schemas.presign import PresignAnswer, PresignRequest
from shared.schemas.tes import s3_location
from site_agent.client import HubClient
from site_agent.config import AgentSettings
from site_agent.errors import HubRefused, HubUnavailable
from site_agent.transfers.exchange import s3_client

log = logging.getLogger("cryomesh.agent.presign")


class Signer:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self._s3: Any = None

    def sign(self, req: PresignRequest) -> PresignAnswer:
        from botocore.exceptions import BotoCoreError, ClientError  # loaded only by a site that signs

        cfg = self.settings.drs
        try:
            bucket, key = s3_location(req.url)
        except ValueError as exc:
            return PresignAnswer(refused=str(exc))
        if bucket not in cfg.presign_buckets:
            return PresignAnswer(refused=f"bucket {bucket!r} is not one this site signs URLs for (its [drs] presign_buckets)")
        ttl = max(1, min(req.ttl_s, cfg.presign_ttl_s))
        try:
            if self._s3 is None:
                self._s3 = s3_client(self.settings.transfers)
            url = self._s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl)
        except (BotoCoreError, ClientError) as exc:
            return PresignAnswer(refused=f"the site could not sign a URL: {exc}")
        return PresignAnswer(url=str(url), expires_at=datetime.now(UTC) + timedelta(seconds=ttl))


async def answer(client: HubClient, signer: Signer, requests: list[PresignRequest]) -> None:
    for req in requests:
        ans = await asyncio.to_thread(signer.sign, req)
        (log.info if ans.url else log.warning)("presign %s for %s: %s", req.id, req.url, ans.refused or "signed")
        try:
            await client.request("POST", f"/api/v1/presign-requests/{req.id}", json=ans.model_dump(mode="json"))
        except HubRefused as exc:  # the client gave up waiting, or another hub process answered
            log.info("presign answer %s not taken: %s", req.id, exc)
        except HubUnavailable as exc:
            log.warning("presign answer %s not delivered: %s", req.id, exc)
