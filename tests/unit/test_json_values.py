"""One rule for JSON scalars: numpy scalars unwrapped, no NaN or infinity, whole floats as ints on request."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from orthoseg.json_values import json_scalar


@pytest.mark.parametrize(
    ("value", "plain", "readable"),
    [
        (np.int64(7), 7, 7),
        (np.float32(2.5), 2.5, 2.5),
        (np.float64(3.0), 3.0, 3),
        (3.0, 3.0, 3),
        (math.nan, None, None),
        (np.float64("inf"), None, None),
        (-math.inf, None, None),
        (np.bool_(True), True, True),
        ("KNEE", "KNEE", "KNEE"),
        (None, None, None),
    ],
)
def test_scalars_become_plain_json(value: object, plain: object, readable: object) -> None:
    assert json_scalar(value) == plain and type(json_scalar(value)) is type(plain)
    assert json_scalar(value, whole_float_as_int=True) == readable
    assert type(json_scalar(value, whole_float_as_int=True)) is type(readable)
    # Strict JSON: what comes out always serialises without NaN or Infinity.
    json.dumps(json_scalar(value), allow_nan=False)
