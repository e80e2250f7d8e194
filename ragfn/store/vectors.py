"""Vectors on the wire: base64 of little-endian float32, a third of the size of a JSON float list."""

from __future__ import annotations

import base64

import numpy as np

from ragfn.core.errors import BadEvent


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str, dimensions: int) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise BadEvent(f"vector is not valid base64: {exc}") from exc
    if len(raw) != dimensions * 4:
        raise BadEvent(f"vector has {len(raw) // 4} float32 values, expected {dimensions}")
    vector = np.frombuffer(raw, dtype="<f4")
    if not np.isfinite(vector).all():
        raise BadEvent("vector contains NaN or infinity")
    return vector
