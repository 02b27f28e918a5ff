"""Exception types. Every message says what was expected, what arrived and how to fix it.

The CLI turns any :class:`SRUNetError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class SRUNetError(Exception):
    """Base class: a user-facing error with a one-line message."""

    prefix = "srunet"

    def __str__(self) -> str:  # "srunet.weights: file.pth: truncated ..."
        msg = super().__str__()
        return msg if msg.startswith(self.prefix) else f"{self.prefix}: {msg}"


class ConfigError(SRUNetError):
    prefix = "srunet.config"


class WeightsError(SRUNetError):
    prefix = "srunet.weights"


class BackendError(SRUNetError):
    prefix = "srunet.backend"


class BackendUnavailable(BackendError):
    """The backend cannot run on this machine (library or device missing)."""


class MediaError(SRUNetError):
    prefix = "srunet.media"


class UsageError(SRUNetError):
    prefix = "srunet"
