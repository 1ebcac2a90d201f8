"""VetHub: a plugin-based integration hub for veterinary practices."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vethub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
