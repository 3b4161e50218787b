"""What crosses the sandbox boundary, shared by the trusted parent (sandbox.py) and the
confined child (sandboxed/child.py): the request, and the framed messages on the result pipe.

Each message is a frame: one tag byte, the body's length as 8 little-endian bytes, the body.
Frames in the order a child sends them:

  D  JSON {"detail"}: the device cannot start (only ever as the first frame, before `S`)
  S  empty: set-up is done; model code runs from here on
  C  JSON {"plan"}: a trial of this execution plan begins (repeated; the last one counts)
  T  JSON: layers, timings, the plan chosen and the plans tried (or, in a pre-flight, batch_ok)
  R  raw little-endian float32: exactly N x kind.output_values of them
  P  raw float32: the preview images' predictions, after the grade is settled
  E  JSON {"kind", "detail"}: a named failure instead of `R`

Everything after `S` may have been written by a compromised child: the parent checks every
frame's size and content, and reads no more than a legitimate child can send.
"""

from __future__ import annotations

import struct

FRAME = struct.Struct("<cQ")
FRAME_HEADER = FRAME.size
MAX_JSON = 64 * 1024
MAX_TRIAL_FRAME = 256
MAX_TRIALS = 24

DEVICE_FAILED = b"D"
SET_UP = b"S"
TRIAL = b"C"
TIMINGS = b"T"
RESULT = b"R"
PREVIEW = b"P"
ERROR = b"E"


def frames_cap(n_values: int) -> int:
    """The most bytes a legitimate child sends for `n_values` float32 predictions (test set
    and preview): the raw values, a few JSON frames and the trial announcements."""
    return n_values * 4 + 4 * (MAX_JSON + FRAME_HEADER) + MAX_TRIALS * (
        MAX_TRIAL_FRAME + FRAME_HEADER
    )
