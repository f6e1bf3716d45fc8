"""The cryomesh version, reported by agents in every heartbeat."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cryomesh")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
