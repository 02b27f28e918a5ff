"""mpv integration: the Lua script directory ``srunet/`` + its frame server, and ``mpv-srunet play``.

See docs/mpv.md. Importing this package is cheap (no torch): the heavy modules
are imported by the server and the player themselves.
"""

from __future__ import annotations

from pathlib import Path


def script_dir() -> Path:
    """The ``srunet`` script directory shipped in the package (``mpv --script=<this>``)."""
    return Path(__file__).resolve().parent / "srunet"
