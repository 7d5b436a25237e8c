"""High-depth pixels (16-bit integer, 32-bit integer or float) onto 0..1, for every mode.

Shared by the digit and the resize preprocessing, so that a 16-bit scan or a float TIFF means
the same brightness whichever model reads it.
"""

from __future__ import annotations

import numpy as np

HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def scale_to_unit(values: np.ndarray, mode: str) -> np.ndarray:
    """Map 16/32-bit integer or float pixels onto 0..1 by their nominal range, never by clipping.

    I;16 is 0..65535 by definition. Mode I and F carry no range, so the common conventions are
    recognised (0..1, 0..255, 0..65535) and anything else is stretched from its own min to max.
    """
    if mode.startswith("I;16"):
        return values / 65535.0
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if low >= 0.0:
        for nominal_max in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
            if high <= nominal_max:
                return values / nominal_max
    if high <= low:
        return np.zeros_like(values)
    # Halved first: float pixels can span more than float32 holds (-3e38..3e38), and their
    # difference would overflow to infinity, then NaN.
    half_low = np.float32(low / 2)
    return (values * np.float32(0.5) - half_low) / np.float32(high / 2 - low / 2)
