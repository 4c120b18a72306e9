"""The frontend's cancel flags for this worker's requests.

One byte per request slot in a segment the frontend shares with the worker
(segment id CANCEL_BOARD_SEGMENT_ID); the frontend sets a request's byte when
its client goes away. `request.is_cancelled()` and the response sender's
`is_cancelled()` read it.
"""

from __future__ import annotations

from tritonlite.shm.arena import SegmentCache
from tritonlite.workers.messages import CANCEL_BOARD_SEGMENT_ID


class CancelBoard:
    def __init__(self, segments: SegmentCache) -> None:
        self._segments = segments

    def is_cancelled(self, slot: int) -> bool:
        """Whether the frontend flagged the client of the request in `slot` as gone."""
        if slot < 0 or CANCEL_BOARD_SEGMENT_ID not in self._segments:
            return False
        return self._segments.get(CANCEL_BOARD_SEGMENT_ID).view[slot] != 0
