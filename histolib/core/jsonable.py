"""Values made JSON-safe, one rule for every file histolib writes as JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists, paths as strings,
    tuples and sets as lists, and NaN / infinity as None (JSON has neither), recursively.

    Examples
    --------
    >>> import numpy as np
    >>> jsonable({"a": np.float32(0.5), "b": [float("nan"), Path("x")]})
    {'a': 0.5, 'b': [None, 'x']}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return jsonable(value.tolist())  # numpy scalar or array
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
