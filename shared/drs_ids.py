"""DRS ids of a dataset's files and directories, computed the same way by the hub (which
serves them) and the agent (which names a TES task's registered outputs by them).

A dataset is ``ds-…``; one of its files is ``<dataset>_<16 hex of sha-256(path)>``, one of
its directories ``<dataset>_<16 hex of sha-256(path + '/')>`` ('_' never occurs in dataset
ids, and no path is both a file and a directory, so the kinds cannot be confused).
"""

from __future__ import annotations

import hashlib


def file_object_id(dataset_id: str, path: str) -> str:
    return f"{dataset_id}_{hashlib.sha256(path.encode()).hexdigest()[:16]}"


def dir_object_id(dataset_id: str, path: str) -> str:
    return file_object_id(dataset_id, path.rstrip("/") + "/")
