"""The CNN's settings for this process, from imgprotect/settings.py, and the network it embeds with.

Apart from ``matching.engine`` so that the index registry, which the engine uses, can ask which
network made the vectors it may hold (``embedding_model``) without an import cycle.
"""
from __future__ import annotations

from django.conf import settings

from matching.core.cnn.config import CnnConfig
from matching.core.cnn.config import configure as configure_cnn
from matching.core.cnn.embedder import model_id

__all__ = ["cnn_config", "cnn_enabled", "embedding_model"]


def cnn_enabled() -> bool:
    return bool(settings.IMGPROTECT_CNN_ENABLED)


def cnn_config() -> CnnConfig:
    """The CNN's settings for this process, from imgprotect/settings.py."""
    return CnnConfig(data_dir=settings.DATA_DIR, tf_threads=settings.IMGPROTECT_TF_THREADS,
                     precision=settings.IMGPROTECT_CNN_PRECISION)


def embedding_model() -> str | None:
    """The network this process's CNN embeds with (``embedder.model_id``), or None without the CNN.

    A stored vector is used only when it records the same network (``ProtectedImage.embedding_model``):
    the vectors of another head are not comparable (docs/training/embedder.md). Reads the weights'
    records, not the model: cheap, and TensorFlow is not started."""
    if not cnn_enabled():
        return None
    configure_cnn(cnn_config())
    return model_id()
