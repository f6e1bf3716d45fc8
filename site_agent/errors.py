"""Errors of the agent's hub client.

HubError
├── HubUnavailable      transport failure, timeout, 408/429/5xx: retry with backoff
└── HubRefused          any other 4xx: the hub said no; retrying the same call won't help
    └── AuthRefused     the token endpoint refused the client (pending, revoked, bad key)
"""

from __future__ import annotations


class HubError(Exception):
    pass


class HubUnavailable(HubError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HubRefused(HubError):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


class AuthRefused(HubRefused):
    @property
    def pending(self) -> bool:
        return "waiting for a network admin" in self.detail
