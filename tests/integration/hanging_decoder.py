"""Test-only decoder plugin (``ValidationConfig.decoder_plugins``): pixel decoding that never returns.

Imported in each validation reader process, it wraps the project's pixel decoder so that files carrying
``HANG_MARKER`` block in native code (libc ``sleep``), as a decoder stuck in a C loop does: no Python
signal handler or in-process timer can interrupt it, only killing the process ends it.
"""

from __future__ import annotations

import ctypes
from typing import Any

from orthoseg.validation import reader

HANG_MARKER = b"ORTHOSEG-TEST-HANG"

_decode = reader.decode_pixels
_libc = ctypes.CDLL(None)


def _hanging_decode(data: bytes, max_pixels: int) -> tuple[Any, Any]:
    if HANG_MARKER in data:
        while True:
            _libc.sleep(3600)
    return _decode(data, max_pixels)


reader.decode_pixels = _hanging_decode  # type: ignore[assignment]
