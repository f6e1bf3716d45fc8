"""How sizes are written for people: the broker's explanations (hub) and the CLI share one
formatter, so "copying 1.0 GB" in a verdict reads as the CLI's transfer progress does."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """Decimal units with one decimal, e.g. '999 B', '1.5 kB', '40.0 GB'; sizes past 1000 TB
    stay in TB (a dataset is at most a few TB)."""
    if n < 1000:
        return f"{int(n)} B"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"
