"""The service's matcher as a benchmark ``System``: ``python -m bench.run --systems service``.

References go through ``index_references`` (signals, ORB features and CNN
embeddings computed as for an upload) into a ``MemoryStore``; queries through
``Matcher.match``, as a check does.
"""
from __future__ import annotations

from typing import Any

from bench.systems import Hit
from matching.core.matcher import Matcher, Thresholds, index_references


class ServiceSystem:
    """The service's matcher behind the benchmark's ``System`` interface (bench/service.py)."""

    def __init__(self, *, cnn: bool = True, thresholds: Thresholds | None = None, name: str = "service") -> None:
        self.name = name
        self.cnn = cnn
        self.thresholds = thresholds or Thresholds.load()
        self.matcher: Matcher | None = None

    def index(self, refs: list[tuple[int, Any]]) -> None:
        embedder = None
        if self.cnn:
            from matching.core.cnn.embedder import get_embedder

            embedder = get_embedder()
        indexed = index_references(refs, embedder=embedder)
        self.matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=self.thresholds,
                               embedder=embedder)

    def query(self, image: Any, top_k: int) -> list[Any]:
        import io

        from matching.core.loading import load_image

        assert self.matcher is not None, "index() first"
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        outcome = self.matcher.match(load_image(buf.getvalue()), top_k=top_k)
        hits = []
        for d in outcome.decisions[:top_k]:
            components = {k: float(v) for k, v in d.signal_scores.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)}
            hits.append(Hit(d.reference_id, d.score, d.is_match, d.verdict,
                            d.region["query"] if d.region else None, components))
        return hits


def benchmark_system() -> ServiceSystem:
    """The benchmark's entry point (``python -m bench.run --systems service``)."""
    return ServiceSystem()


def benchmark_system_hashes_only() -> ServiceSystem:
    return ServiceSystem(cnn=False, name="service-hashes")
