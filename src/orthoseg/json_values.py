"""One rule for the scalar values the project writes as JSON (rows, reasons, manifest hashes).

Values come out of numpy, pandas and Great Expectations as numpy scalars and NaN; JSON has neither
(``json.dumps`` writes NaN and Infinity, which strict readers refuse), and a content hash must not depend
on whether a number arrived as ``numpy.int64`` or ``int``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_scalar(value: Any, *, whole_float_as_int: bool = False) -> Any:
    """``value`` as a plain Python scalar: numpy scalars unwrapped, NaN and infinities as None.

    Args:
        value: any value; other than numpy scalars and floats it is returned as given.
        whole_float_as_int: write whole floats as ints (``3`` not ``3.0``), for reasons a person reads.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if whole_float_as_int and value.is_integer():
            return int(value)
    return value
