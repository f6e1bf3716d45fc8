"""Property-based fuzzing of the whole API with schemathesis, against a real hub.

Every operation in the hub's own OpenAPI document is called with generated requests (valid
ones, and invalid ones), as a network admin, a researcher and a site's agent. The bar: no
5xx, and every response is one the document declares, in the shape it declares.

Bounded so it fits in the suite: a few examples per operation and mode, each sent as
every caller, no shrinking. Hypothesis keeps no database between runs here (the examples are random each run).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import Hub, heartbeat_body, running_hub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: Examples per operation: valid requests, and requests made invalid on purpose (each sent as each caller).
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 3, schemathesis.GenerationMode.NEGATIVE: 2}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _callers(hub: Hub, tmp: Path) -> dict[str, str]:
    hub.create_site("kek", institution="kek")
    agent = hub.enroll_agent("kek", tmp / "agent")
    researcher = hub.account("researcher", institution="kek")
    agent_token = hub.agent_token(agent)
    with hub.http(agent_token) as c:
        assert c.post("/api/v1/sites/kek/heartbeat", json=heartbeat_body()).status_code == 200
    return {"admin": hub.token_for(hub.admin), "researcher": hub.token_for(researcher), "agent": agent_token}


# A long test: the garbage collector may run during it and report a file another test in
# this worker left unclosed (seen once: an anonymous pipe, fd 13). That is not this test's
# failure; leaks are still errors everywhere else.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_no_server_errors_and_responses_match_the_document(pg_url: str, tmp_path: Path, capsys: Any) -> None:
    # PostgreSQL: the production database, and the stricter one (no NUL in text, BIGINT overflow).
    with running_hub(pg_url, tmp_path / "data") as hub:
        _fuzz_all(hub, tmp_path, capsys)


def _fuzz_all(hub: Hub, tmp_path: Path, capsys: Any) -> None:
    tokens = _callers(hub, tmp_path)
    schema = schemathesis.openapi.from_url(f"{hub.url}/openapi.json", timeout=60)
    operations = [r.ok() for r in schema.get_all_operations()]
    # The sign-in pages answer HTML forms to browsers; the token endpoint is OAuth's, not JSON.
    operations = [op for op in operations if not op.path.startswith(("/oauth/", "/signin"))]
    failures: dict[str, str] = {}
    requests: Counter[str] = Counter()
    slowest: Counter[str] = Counter()
    started = time.monotonic()

    callers = {who: {"Authorization": f"Bearer {token}"} for who, token in tokens.items()}
    for op in operations:
        for mode in EXAMPLES:
            t0 = time.monotonic()
            _fuzz(hub.url, op, mode, callers, requests, failures)
            slowest[op.label] += time.monotonic() - t0

    elapsed = time.monotonic() - started
    with capsys.disabled():  # the numbers belong in the suite's output
        print(
            f"\nfuzz: {len(operations)} operations, {sum(requests.values())} requests "
            f"({', '.join(f'{n} as {who}' for who, n in requests.items())}) in {elapsed:.0f} s; "
            f"{len(failures)} distinct failures; slowest: "
            + ", ".join(f"{label} {t:.1f} s" for label, t in slowest.most_common(3))
        )
    for key, detail in sorted(failures.items()):
        print(f"--- {key}\n{detail}\n")
    assert not failures, f"{len(failures)} distinct failures: " + "; ".join(sorted(failures)[:20])


def _fuzz(
    url: str, op: Any, mode: Any, callers: dict[str, dict[str, str]], requests: Counter[str], failures: dict[str, str]
) -> None:
    """Each generated request is sent once as each caller: generating it is most of the cost
    (about two thirds of the test's CPU when each caller had requests of its own)."""

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(case: schemathesis.Case) -> None:
        for who, headers in callers.items():
            requests[who] += 1
            try:
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)
            except FailureGroup as group:  # collect every distinct failure, don't stop at the first
                for failure in group.exceptions:
                    key = f"{op.label} as {who}: {failure.title}"
                    failures.setdefault(key, f"{case.as_curl_command(headers={})}\n{str(failure)[:1500]}")
            except Exception as exc:  # a dropped connection, a response that is not what it says
                failures.setdefault(f"{op.label} as {who}: {type(exc).__name__}", f"{case.as_curl_command(headers={})}\n{exc!r}")

    with contextlib.suppress(Unsatisfiable):  # nothing to make invalid (no parameters, no body)
        run()
