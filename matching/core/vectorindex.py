"""Nearest-neighbour search over L2-normalised float32 vectors (the CNN embeddings).

Inner product = cosine for unit vectors. Forms, picked by size when the index
is (re)built:

* below ``hnsw_threshold`` live vectors (10,000): exact search,
  ``faiss.IndexFlatIP`` inside an ``IndexIDMap2``; removal is real;
* from the threshold up, ``structure`` (default ``"ivf"``):

  - ``"ivf"``: ``faiss.IndexIVFFlat`` (inner product) with about 4 sqrt(n)
    cells (k-means, seeded) whose centroids are found by a small HNSW graph
    (the coarse quantizer), ``nprobe`` 64 (12 meets a plain recall@10 of
    0.99; see ``IVF_NPROBE``), ids stored natively, removal real
    (``remove_ids``). The cells are trained on the vectors present at
    (re)build time; once the live count passes 8x that, the next ``add``
    retrains from everything. Chosen because a protected picture usually has
    no close neighbour in its collection, and graph search (HNSW) reaches
    such isolated vectors poorly: at 1M, HNSW efSearch 128 missed the
    reference of a copy query in its top 6 for 31 % of queries where IVF
    missed 4 % (docs/training/vectorindex.md).
  - ``"hnsw"``: ``faiss.IndexHNSWFlat`` (M=32) inside an ``IndexIDMap2``,
    efSearch 128. HNSW cannot delete, so a removed vector becomes a
    tombstone, excluded during the graph search by an ``IDSelector`` (so k
    live results still come back); past 20 % tombstones the index is rebuilt
    from the live vectors.

A flat index that grows past the threshold by ``add`` turns itself into the
approximate form (one rebuild); ``rebuild()`` re-decides from the live count.

Snapshots: ``save(path)`` writes the FAISS native file at ``path`` and a
checkpoint ``path + ".ckpt.npz"`` (no pickle: a JSON record and the
tombstone positions) holding the SHA-256 of the index file, the live count,
the last id added and a generation number bumped by every change.
:func:`read_checkpoint` reads only that small file, so a worker can tell that
its snapshot is current without loading (or rebuilding) anything. Any damage
raises :class:`~matching.core.snapshots.SnapshotError`.

FAISS is imported lazily. Threads are FAISS's process-wide OpenMP setting,
left alone here; the figures in docs/training/vectorindex.md are for
``faiss.omp_set_num_threads(1)``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .snapshots import SnapshotError, atomic_savez, atomic_write

__all__ = [
    "DEAD_SHARE",
    "FORMAT_VERSION",
    "HNSW_THRESHOLD",
    "Checkpoint",
    "VectorIndex",
    "read_checkpoint",
]

FORMAT = "imgprotect/vectorindex"
FORMAT_VERSION = 1
# Exact search below this many live vectors. Measured at 256-d on one core
# (docs/training/vectorindex.md): one exact query costs 0.18 ms at 5k vectors,
# 0.73 ms at 20k and 2.0 ms at 50k, against ~0.2-0.5 ms for HNSW at any size;
# they cross near 10k, and below that the exact answer is also the cheaper one.
HNSW_THRESHOLD = 10_000
# The approximate structure above the threshold. "ivf" by default: at 1M
# vectors a protected image whose embedding has no close neighbour in the
# collection (the usual case: each picture is protected once) was missing
# from HNSW's top 6 for 31 % of copy queries (efSearch 128; 20 % at 512),
# because few graph edges lead to an isolated node; IVF probes the cells
# nearest the query, so the copy's cell is searched whatever surrounds it
# (96 % at the default nprobe; docs/training/vectorindex.md).
DEFAULT_STRUCTURE = "ivf"
STRUCTURES = ("ivf", "hnsw")
# ~4 sqrt(n) cells (4,000 at 1M) found through an HNSW graph over the centroids: at 1M x 256-d,
# nprobe 12 gives recall@10 0.99 in 0.4 ms on one core, where 2 sqrt(n) cells with an exact
# coarse search needed nprobe 32 and 1.9 ms for the same recall (docs/training/vectorindex.md).
# The default searches wider because a check needs more than the nearest neighbours: the one
# reference a copy was made from, isolated among 1M and moved by the attack, in its top 6
# (at 1M: 0.90 of whole-frame copies at nprobe 16, 0.96 at 64, for 1.4 ms).
IVF_CELLS_PER_SQRT = 4
IVF_NPROBE = 64
IVF_QUANTIZER_M = 32  # links per centroid in the coarse quantizer's graph
IVF_QUANTIZER_EF = 32  # its search breadth (at least nprobe); 16 lost 0.2 % recall@10 at 1M, 64 gained nothing
IVF_TRAIN_PER_CELL = 128  # k-means sample: this many vectors a cell at most
IVF_REGROW = 8  # retrain (rebuild) once the live count passes this multiple of the trained count
HNSW_M = 32
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 80
DEAD_SHARE = 0.20
_NORM_TOLERANCE = 1e-3
_CKPT_SUFFIX = ".ckpt.npz"

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Checkpoint:
    """What a snapshot contains: enough to decide whether it is current without loading it."""

    count: int  # live vectors
    last_id: int  # largest id ever added (-1 when none)
    generation: int  # bumped by every add, remove and rebuild
    kind: str  # "flat", "ivf" or "hnsw"
    dim: int


def _member(sorted_ids: IdArray, query: IdArray) -> npt.NDArray[np.bool_]:
    """Which of ``query`` are in ``sorted_ids``: O(k log n), unlike np.isin's O(n log n) at 1M ids."""
    if not len(sorted_ids):
        return np.zeros(len(query), bool)
    pos = np.minimum(np.searchsorted(sorted_ids, query), len(sorted_ids) - 1)
    found: npt.NDArray[np.bool_] = sorted_ids[pos] == query
    return found


def _owned(downcast: Any, index: Any) -> Any:
    """Downcast a FAISS index and move ownership to the typed proxy: the generic proxy
    ``read_index`` returns would otherwise free the C++ object when it is collected."""
    typed = downcast(index)
    index.this.disown()
    typed.this.acquire()
    return typed


def ivf_lists(n: int) -> int:
    """Cells of an IVF over ``n`` vectors: about 4 sqrt(n) (4,000 at 1M), with at least
    39 training vectors a cell (FAISS's k-means minimum) and at least one cell."""
    return max(1, min(round(IVF_CELLS_PER_SQRT * math.sqrt(n)), n // 39))


def _ivf_contents(ivf: Any, dim: int, *, vectors: bool = True) -> tuple[IdArray, FloatArray | None]:
    """(ids, vectors) stored in an ``IndexIVFFlat``, list by list; ``vectors=False`` reads the ids
    alone (a snapshot load needs only those: copying 1M vectors would add seconds and 1 GB)."""
    import faiss

    invlists = ivf.invlists
    ids_out, vecs_out = [], []
    for cell in range(ivf.nlist):
        size = invlists.list_size(cell)
        if not size:
            continue
        ids_out.append(faiss.rev_swig_ptr(invlists.get_ids(cell), size).copy())
        if vectors:
            codes = faiss.rev_swig_ptr(invlists.get_codes(cell), size * dim * 4).copy()
            vecs_out.append(codes.view(np.float32).reshape(size, dim))
    ids = np.concatenate(ids_out).astype(np.int64) if ids_out else np.zeros(0, np.int64)
    if not vectors:
        return ids, None
    return ids, np.concatenate(vecs_out) if vecs_out else np.zeros((0, dim), np.float32)


def _checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + _CKPT_SUFFIX)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _read_checkpoint_file(path: Path) -> tuple[dict[str, Any], IdArray]:
    ckpt = _checkpoint_path(path)
    try:
        with np.load(ckpt, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            dead = np.asarray(npz["dead"], dtype=np.int64)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise SnapshotError(f"cannot read vector-index checkpoint {os.fspath(ckpt)!r}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SnapshotError(f"{os.fspath(ckpt)!r} is not a vector-index checkpoint")
    if meta.get("version") != FORMAT_VERSION:
        raise SnapshotError(f"vector-index snapshot format {meta.get('version')}, expected {FORMAT_VERSION}")
    return meta, dead


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """The checkpoint saved beside ``path``; reads only the small sidecar file."""
    meta, _ = _read_checkpoint_file(Path(path))
    try:
        return Checkpoint(count=int(meta["count"]), last_id=int(meta["last_id"]),
                          generation=int(meta["generation"]), kind=str(meta["kind"]), dim=int(meta["dim"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"vector-index checkpoint is malformed: {exc}") from exc


class VectorIndex:
    """Exact or HNSW inner-product search with int64 ids, incremental add/remove and snapshots.

    Results of :meth:`search` are ``(id, score)`` pairs, best first (score
    descending, then id ascending), live vectors only, at most ``k`` per query.
    Not safe for concurrent writers; concurrent searches without writes are.
    """

    def __init__(self, dim: int = 256, *, hnsw_threshold: int = HNSW_THRESHOLD, m: int = HNSW_M,
                 ef_search: int = HNSW_EF_SEARCH, ef_construction: int = HNSW_EF_CONSTRUCTION,
                 structure: str = DEFAULT_STRUCTURE, nprobe: int = IVF_NPROBE) -> None:
        if dim < 1 or hnsw_threshold < 0 or m < 2 or ef_search < 1 or ef_construction < 1 or nprobe < 1:
            raise ValueError("dim, m, ef_search, ef_construction and nprobe must be positive")
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}, not {structure!r}")
        self.dim = dim
        # Above ``hnsw_threshold`` live vectors the index is approximate: ``structure``.
        self.structure = structure
        self._nprobe = nprobe
        self._trained_count = 0  # IVF: live vectors when the coarse quantizer was trained
        self.hnsw_threshold = hnsw_threshold
        self.m = m
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.generation = 0
        self.last_id = -1
        self._index: Any = self._new_index("flat")
        self._kind = "flat"
        # HNSW only: position -> external id (a copy of the IDMap's id_map, so
        # searches translate positions without a call into FAISS) and tombstones.
        self._pos_ids: IdArray = np.zeros(0, np.int64)
        self._dead: npt.NDArray[np.bool_] = np.zeros(0, bool)
        self._inner: Any = None  # typed HNSW index, cached
        self._params: tuple[Any, ...] | None = None  # ((efSearch, n_dead), SearchParametersHNSW, ...)
        self._live: IdArray = np.zeros(0, np.int64)  # sorted live ids, for duplicate checks

    # -------------------------------------------------------------- state

    @property
    def nprobe(self) -> int:
        """IVF cells searched a query (more: higher recall, slower)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if value < 1:
            raise ValueError("nprobe must be positive")
        self._nprobe = value
        if self._kind == "ivf":
            self._tune_ivf(self._index)

    def _tune_ivf(self, ivf: Any) -> None:
        """Apply ``nprobe`` (and a coarse-quantizer breadth to match) to an IVF index."""
        import faiss

        ivf.nprobe = min(self._nprobe, ivf.nlist)
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = max(IVF_QUANTIZER_EF, ivf.nprobe)

    @property
    def kind(self) -> str:
        """``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``."""
        return self._kind

    def __len__(self) -> int:
        return len(self._live)

    @property
    def n_dead(self) -> int:
        """Tombstones (HNSW only). O(1): a search asks for it, so no pass over the flags."""
        return int(self._index.ntotal) - len(self._live)

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(count=len(self), last_id=self.last_id, generation=self.generation,
                          kind=self._kind, dim=self.dim)

    def holds(self, ids: Any) -> npt.NDArray[np.bool_]:
        """Which of ``ids`` (unique) are live here. For many ids at once (an organisation's rows):
        ``np.isin`` sorts them, faster than ``_member``'s searches then (1M ids among 4.5M live:
        about 0.2 s against 0.7 s)."""
        held: npt.NDArray[np.bool_] = np.isin(np.asarray(ids, dtype=np.int64), self._live, assume_unique=True)
        return held

    def __contains__(self, vector_id: object) -> bool:
        if not isinstance(vector_id, (int, np.integer)):
            return False
        i = int(np.searchsorted(self._live, vector_id))
        return i < len(self._live) and int(self._live[i]) == int(vector_id)

    def memory_bytes(self) -> int:
        """Approximate resident size: vectors, graph links, ids and bookkeeping."""
        n = int(self._index.ntotal)
        per = self.dim * 4 + 8 + 8  # vector, id_map entry, sorted live id
        if self._kind == "ivf":  # + centroids and their graph's links
            return n * (self.dim * 4 + 8 + 8) + int(self._index.nlist) * (self.dim * 4 + 2 * IVF_QUANTIZER_M * 4)
        if self._kind == "hnsw":
            import faiss

            hnsw = faiss.downcast_index(self._index.index).hnsw
            links = int(faiss.vector_to_array(hnsw.neighbors).nbytes + faiss.vector_to_array(hnsw.offsets).nbytes)
            levels = int(faiss.vector_to_array(hnsw.levels).nbytes)
            return n * (per + 9) + links + levels  # + pos id and tombstone flag
        return n * per

    # -------------------------------------------------------------- building

    def _new_index(self, kind: str, train: FloatArray | None = None) -> Any:
        import faiss

        if kind == "ivf":
            # Native ids (no IDMap: its removal assumes the inner index renumbers, which IVF does not).
            # The factory trains k-means with an exact assignment, then puts the centroids in the graph.
            assert train is not None
            nlist = ivf_lists(len(train))
            ivf = _owned(faiss.downcast_index, faiss.index_factory(
                self.dim, f"IVF{nlist}_HNSW{IVF_QUANTIZER_M},Flat", faiss.METRIC_INNER_PRODUCT))
            ivf.cp.seed = 1234  # k-means: the same vectors train the same cells
            sample = train
            if len(train) > IVF_TRAIN_PER_CELL * nlist:
                sample = train[np.random.default_rng(0).choice(len(train), IVF_TRAIN_PER_CELL * nlist,
                                                               replace=False)]
            ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
            self._tune_ivf(ivf)
            return ivf
        if kind == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        else:
            inner = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = self.ef_construction
            inner.hnsw.efSearch = self.ef_search
        return faiss.IndexIDMap2(inner)

    def _check(self, ids: Any, vectors: Any) -> tuple[IdArray, FloatArray]:
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        if vecs.ndim == 1:
            vecs = vecs.reshape(1, -1)
        id_arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {np.shape(vectors)}")
        if len(id_arr) != len(vecs):
            raise ValueError(f"{len(id_arr)} ids for {len(vecs)} vectors")
        if not np.all(np.isfinite(vecs)):
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(vecs, axis=1)
        if len(norms) and np.max(np.abs(norms - 1.0)) > _NORM_TOLERANCE:
            raise ValueError("vectors must be L2-normalised")
        if len(id_arr) and id_arr.min() < 0:
            raise ValueError("ids must be non-negative")
        return id_arr, vecs

    def add(self, ids: Any, vectors: Any) -> None:
        """Add vectors under new ids (an id already present raises ``ValueError``: remove it first)."""
        id_arr, vecs = self._check(ids, vectors)
        if not len(id_arr):
            return
        uniq = np.unique(id_arr)
        if len(uniq) != len(id_arr):
            raise ValueError("duplicate ids in one add")
        present = _member(self._live, uniq)
        if present.any():
            raise ValueError(f"ids already in the index: {uniq[present][:5].tolist()}")
        grown = len(self) + len(id_arr)
        if ((self._kind == "flat" and grown >= self.hnsw_threshold)
                or (self._kind == "ivf" and grown > IVF_REGROW * max(self._trained_count, 1))):
            # Growing past the threshold (flat -> approximate), or an IVF whose cells were
            # trained on a much smaller collection: rebuild once with everything.
            ids_all, vecs_all = self._live_arrays()
            self._build(np.concatenate([ids_all, id_arr]), np.concatenate([vecs_all, vecs]))
        else:
            self._index.add_with_ids(vecs, id_arr)
            if self._kind == "hnsw":
                self._pos_ids = np.concatenate([self._pos_ids, id_arr])
                self._dead = np.concatenate([self._dead, np.zeros(len(id_arr), bool)])
            self._live = np.insert(self._live, np.searchsorted(self._live, uniq), uniq)
        self.last_id = max(self.last_id, int(id_arr.max()))
        self.generation += 1

    def remove(self, ids: Any) -> int:
        """Remove these ids (unknown ones are ignored); returns how many were removed."""
        id_arr = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        gone = id_arr[_member(self._live, id_arr)]
        if not len(gone):
            return 0
        if self._kind in ("flat", "ivf"):
            import faiss

            self._index.remove_ids(faiss.IDSelectorBatch(gone))
        else:
            self._dead |= np.isin(self._pos_ids, gone) & ~self._dead
        self._live = np.setdiff1d(self._live, gone, assume_unique=True)
        self.generation += 1
        if self._kind == "hnsw" and self.n_dead > DEAD_SHARE * len(self._dead):
            self.rebuild()
        return len(gone)

    def _live_arrays(self) -> tuple[IdArray, FloatArray]:
        """(ids, vectors) of the live entries, in storage order."""
        n = self._index.ntotal
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        import faiss

        if self._kind == "ivf":
            ids, vectors = _ivf_contents(self._index, self.dim)
            assert vectors is not None
            return ids, vectors
        inner = faiss.downcast_index(self._index.index)
        vectors = inner.reconstruct_n(0, n) if self._kind == "flat" else inner.storage.reconstruct_n(0, n)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if self._kind == "hnsw":
            keep = ~self._dead
            return ids[keep], vectors[keep]
        return ids, vectors

    def _build(self, ids: IdArray, vectors: FloatArray) -> None:
        kind = self.structure if len(ids) >= self.hnsw_threshold else "flat"
        index = self._new_index(kind, train=vectors if kind == "ivf" else None)
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self._trained_count = len(ids) if kind == "ivf" else 0
        self._index, self._kind = index, kind
        self._pos_ids = ids.copy() if kind == "hnsw" else np.zeros(0, np.int64)
        self._dead = np.zeros(len(ids) if kind == "hnsw" else 0, bool)
        self._inner = self._params = None
        self._live = np.sort(ids)

    def rebuild(self) -> None:
        """Rebuild from the live vectors, dropping tombstones and re-choosing flat or HNSW by size."""
        ids, vectors = self._live_arrays()
        self._build(ids, vectors)
        self.generation += 1

    @classmethod
    def build(cls, ids: Any, vectors: Any, **options: Any) -> "VectorIndex":
        """A new index holding ``vectors`` under ``ids`` (flat or HNSW by count)."""
        index = cls(int(np.shape(vectors)[-1]), **options)
        id_arr, vecs = index._check(ids, vectors)
        if len(np.unique(id_arr)) != len(id_arr):
            raise ValueError("duplicate ids")
        index._build(id_arr, vecs)
        index.last_id = int(id_arr.max()) if len(id_arr) else -1
        index.generation = 1
        return index

    # -------------------------------------------------------------- search

    def search(self, vectors: Any, k: int = 10) -> list[list[tuple[int, float]]]:
        """For each query row, up to ``k`` live ``(id, score)`` pairs, best first (ties by id)."""
        if k < 1:
            raise ValueError("k must be >= 1")
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries.reshape(1, -1)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (n, {self.dim}), got {np.shape(vectors)}")
        if not np.all(np.isfinite(queries)):
            raise ValueError("queries contain NaN or infinity")
        if self._index.ntotal == 0:
            return [[] for _ in range(len(queries))]
        kk = min(k, len(self))
        if self._kind in ("flat", "ivf"):
            scores, labels = self._index.search(queries, kk)
        else:
            scores, positions = self._hnsw().search(queries, kk, params=self._hnsw_params(kk))
            labels = np.where(positions >= 0, self._pos_ids[np.maximum(positions, 0)], -1)
        out = []
        for row_ids, row_scores in zip(labels.tolist(), scores.tolist(), strict=True):
            hits = [(i, s) for i, s in zip(row_ids, row_scores, strict=True) if i >= 0]
            hits.sort(key=lambda h: (-h[1], h[0]))
            out.append(hits)
        return out

    def _hnsw(self) -> Any:
        """The IndexHNSWFlat inside the IDMap, typed once (SWIG proxies cost microseconds a query)."""
        if self._inner is None:
            import faiss

            self._inner = faiss.downcast_index(self._index.index)
        return self._inner

    def _hnsw_params(self, k: int) -> Any:
        """Search parameters (efSearch, the tombstone filter), cached until either changes."""
        key = (max(self.ef_search, k), self.n_dead)
        if self._params is None or self._params[0] != key:
            import faiss

            if self.n_dead:
                # Keep the batch selector referenced: the Not wrapper does not own it.
                batch = faiss.IDSelectorBatch(np.flatnonzero(self._dead).astype(np.int64))
                selector = faiss.IDSelectorNot(batch)
                params = faiss.SearchParametersHNSW(efSearch=key[0], sel=selector)
                self._params = (key, params, batch, selector)
            else:
                self._params = (key, faiss.SearchParametersHNSW(efSearch=key[0]))
        return self._params[1]

    # -------------------------------------------------------------- snapshots

    def save(self, path: str | os.PathLike[str]) -> Checkpoint:
        """Write the FAISS file and its checkpoint atomically (each: temp file + rename).

        The index file is written first and the checkpoint naming its digest
        last, so a crash in between leaves a pair that fails to load (and is
        rebuilt) rather than a silently mismatched one.
        """
        import faiss

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = ""

        def write_index(tmp: str) -> None:
            nonlocal digest
            faiss.write_index(self._index, tmp)
            digest = _file_sha256(Path(tmp))

        # Not fsynced (as before): a lost snapshot is rebuilt from the database.
        atomic_write(path, write_index, prefix=f".{path.name}.", mode=0o644, durable=False)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "sha256": digest, **asdict(self.checkpoint),
                "stored": int(self._index.ntotal), "hnsw_threshold": self.hnsw_threshold, "m": self.m,
                "ef_search": self.ef_search, "ef_construction": self.ef_construction,
                "structure": self.structure, "nprobe": self.nprobe, "trained_count": self._trained_count}
        ckpt = _checkpoint_path(path)
        atomic_savez(ckpt, {"meta": np.array(json.dumps(meta, sort_keys=True)),
                            "dead": np.flatnonzero(self._dead).astype(np.int64)},
                     prefix=f".{ckpt.name}.", mode=0o644, durable=False)
        return self.checkpoint

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "VectorIndex":
        """Read a snapshot written by :meth:`save`; any damage raises ``SnapshotError``."""
        import faiss

        path = Path(path)
        meta, dead = _read_checkpoint_file(path)
        try:
            digest = _file_sha256(path)
        except OSError as exc:
            raise SnapshotError(f"cannot read vector-index snapshot {os.fspath(path)!r}: {exc}") from exc
        if digest != meta.get("sha256"):
            raise SnapshotError("vector-index snapshot checksum mismatch")
        try:
            raw = _owned(faiss.downcast_index, faiss.read_index(str(path)))
            index = cls(int(meta["dim"]), hnsw_threshold=int(meta["hnsw_threshold"]), m=int(meta["m"]),
                        ef_search=int(meta["ef_search"]), ef_construction=int(meta["ef_construction"]),
                        structure=str(meta.get("structure", "hnsw")))  # nprobe: a search setting, today's
            kind, stored = str(meta["kind"]), int(meta["stored"])
            if kind == "ivf":
                if not isinstance(raw, faiss.IndexIVFFlat) or raw.d != index.dim or raw.ntotal != stored:
                    raise SnapshotError("vector-index snapshot does not match its checkpoint")
                if len(dead):
                    raise SnapshotError("an IVF vector-index snapshot has tombstones")
                index._tune_ivf(raw)
                index._index, index._kind = raw, kind
                index._trained_count = int(meta.get("trained_count", stored))
                index._live = np.sort(_ivf_contents(raw, index.dim, vectors=False)[0])
                if len(index._live) != int(meta["count"]) or np.any(np.diff(index._live) == 0):
                    raise SnapshotError("vector-index snapshot ids do not match its checkpoint")
                index.last_id, index.generation = int(meta["last_id"]), int(meta["generation"])
                return index
            if not isinstance(raw, faiss.IndexIDMap2):
                raise SnapshotError("vector-index snapshot is not an IndexIDMap2")
            inner = faiss.downcast_index(raw.index)
            expected = faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexFlatIP
            if not isinstance(inner, expected) or raw.d != index.dim or raw.ntotal != stored:
                raise SnapshotError("vector-index snapshot does not match its checkpoint")
            ids = faiss.vector_to_array(raw.id_map).astype(np.int64)
            if kind == "hnsw":
                inner.hnsw.efSearch = index.ef_search
                index._pos_ids = ids
                index._dead = np.zeros(stored, bool)
                if len(dead) and (dead.min() < 0 or dead.max() >= stored):
                    raise SnapshotError("vector-index tombstones out of range")
                index._dead[dead] = True
                ids = ids[~index._dead]
            elif len(dead):
                raise SnapshotError("a flat vector-index snapshot has tombstones")
            index._index, index._kind = raw, kind
            index._live = np.sort(ids)
            if len(index._live) != int(meta["count"]) or np.any(np.diff(index._live) == 0):
                raise SnapshotError("vector-index snapshot ids do not match its checkpoint")
            index.last_id, index.generation = int(meta["last_id"]), int(meta["generation"])
        except SnapshotError:
            raise
        except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"cannot read vector-index snapshot {os.fspath(path)!r}: {exc}") from exc
        return index
