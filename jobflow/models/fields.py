"""Field types shared by the documents."""
import numpy as np
from bson.binary import Binary, BinaryVectorDtype
from mongoengine.base import BaseField


def vector_to_bson(vector) -> Binary:
    """A float32 vector as a BSON binary vector (subtype 9), what Atlas Vector Search reads."""
    array = np.ascontiguousarray(vector, dtype=np.float32).ravel()
    return Binary.from_vector(array, BinaryVectorDtype.FLOAT32)


def vector_from_bson(value) -> np.ndarray | None:
    """A float32 array from a BSON binary vector, or from a legacy array of doubles."""
    if value is None:
        return None
    if isinstance(value, Binary) and value.subtype == 9:
        # Header: dtype byte and padding byte, then little-endian float32.
        return np.frombuffer(bytes(value), dtype="<f4", offset=2).astype(np.float32, copy=False)
    if isinstance(value, (bytes, bytearray)):
        return np.frombuffer(bytes(value), dtype="<f4", offset=2).astype(np.float32, copy=False)
    return np.asarray(value, dtype=np.float32)


class VectorField(BaseField):
    """A float32 vector stored as a BSON binary vector."""

    def to_mongo(self, value):
        return None if value is None else vector_to_bson(value)

    def to_python(self, value):
        if value is None or isinstance(value, np.ndarray):
            return value
        return vector_from_bson(value)

    def validate(self, value):
        if value is not None and not isinstance(value, (np.ndarray, list, tuple, Binary)):
            self.error("a vector must be a float array")
