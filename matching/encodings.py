"""How signals are stored in database columns: 64-bit hashes as signed integers (the column type)
and CNN embeddings as float16 bytes. The index registry reads these; indexing writes them."""
from __future__ import annotations

import numpy as np

U64 = 1 << 64
EMBEDDING_DTYPE = np.float16


def to_signed64(value: int) -> int:
    return value - U64 if value >= 1 << 63 else value


def to_unsigned64(value: int) -> int:
    return value & (U64 - 1)


def embedding_to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=EMBEDDING_DTYPE).tobytes()


def embedding_from_bytes(data: bytes | memoryview) -> np.ndarray:
    vector = np.frombuffer(bytes(data), dtype=EMBEDDING_DTYPE).astype(np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)  # float16 rounding


def embeddings_from_bytes(data: bytes | memoryview, dim: int) -> np.ndarray:
    """Several ``dim``-d embeddings stored one after the other (a logo's mark views,
    ``ProtectedImage.mark_embeddings``), as unit float32 rows."""
    vectors = np.frombuffer(bytes(data), dtype=EMBEDDING_DTYPE).reshape(-1, dim).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # float16 rounding
