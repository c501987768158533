"""What became of one batch sent to the hub (``sender`` decides it, ``delivery`` acts on it): apart
from the sender, so that the request path's imports hold no gRPC."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    delivered: bool = False
    retry_after_s: float | None = None
    """Set when the batch should be sent again: the server's requested delay, or 0 for "your backoff"."""
    error: str = ""
    """What went wrong (for the log), with what to do about it when it is permanent."""
    rejected: int = 0
    """Data points the hub took but does not store (partial success)."""

    @property
    def permanent(self) -> bool:
        return not self.delivered and self.retry_after_s is None
