"""Time-ordered identifiers (UUIDv7, RFC 9562).

Time order matters for the stores: random UUIDs scatter inserts across the
primary-key index, which cost SQLite two thirds of its burst throughput in the
prototype (see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    """Return a new UUIDv7 as a 36-character string, monotonic within a process."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same millisecond (or the clock stepped back): keep order with a
            # 12-bit counter in rand_a, borrowing the next millisecond on wrap.
            _seq += 1
            if _seq > 0xFFF:
                _seq = 0
                _last_ms += 1
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = int.from_bytes(os.urandom(2), "big") & 0x3FF
        seq = _seq
    rand_b = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
