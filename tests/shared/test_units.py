"""The one byte formatter the hub's explanations and the CLI share (shared/units.py)."""

from __future__ import annotations

import pytest

from shared.units import human_bytes


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (999.9, "999 B"),
        (1000, "1.0 kB"),
        (1536, "1.5 kB"),
        (2_500_000, "2.5 MB"),
        (10**9, "1.0 GB"),
        (40 * 10**9, "40.0 GB"),
        (5 * 10**12, "5.0 TB"),
        (5 * 10**15, "5000.0 TB"),
        (123.4e6, "123.4 MB"),
    ],
)
def test_sizes_read_in_decimal_units(n: float, text: str) -> None:
    assert human_bytes(n) == text


def test_the_broker_and_the_cli_write_sizes_alike() -> None:
    import cryomesh_cli.datasets_cmds as cli
    import hub.broker.rules as rules

    assert rules.human_bytes is cli.human_bytes is human_bytes
