"""What a call's record keeps of its stream's text frames: the first few, up to a size; the rest counted.

PIOPIY may send a text frame first (a call UUID or JSON metadata); a faulty platform or a hostile peer
may send thousands, each up to `security.max_frame_bytes`. 600 of them once added 119 MB to one record,
and reading it back blocked the service for 1.3 s. So a call keeps at most `storage.max_text_frames`
frames and `storage.max_text_bytes` of their text; a frame larger than what is left is kept as a stub
with its size, and beyond the count nothing is kept. What was left out is recorded at hang-up
(`stream/text_truncated`: frames and bytes received, kept and dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Admission = Literal["whole", "stub", "drop"]


@dataclass
class TextFrameBudget:
    """One call's allowance of text frames in its record."""

    max_frames: int
    max_bytes: int
    received: int = 0
    received_bytes: int = 0
    kept: int = 0
    """Frames with an event in the record (whole or as a stub)."""
    kept_bytes: int = 0
    stubs: int = 0
    """Kept frames whose content was left out (too large for what was left of `max_bytes`)."""

    def admit(self, size: int) -> Admission:
        """How a frame of `size` bytes goes into the record: whole, as a stub with its size, or not."""
        self.received += 1
        self.received_bytes += size
        if self.kept >= self.max_frames:
            return "drop"
        self.kept += 1
        if self.kept_bytes + size > self.max_bytes:
            self.stubs += 1
            return "stub"
        self.kept_bytes += size
        return "whole"

    def summary(self) -> dict[str, Any] | None:
        """What was left out, for the record; None when every frame was kept whole."""
        if self.received == self.kept and not self.stubs:
            return None
        return {
            "frames": self.received,
            "frames_kept": self.kept - self.stubs,
            "frames_stubbed": self.stubs,
            "frames_dropped": self.received - self.kept,
            "bytes": self.received_bytes,
            "bytes_kept": self.kept_bytes,
            "bytes_dropped": self.received_bytes - self.kept_bytes,
            "max_frames": self.max_frames,
            "max_bytes": self.max_bytes,
        }
