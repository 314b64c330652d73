"""The scan snapshot (spark/references.py) carries the logos' marks: written, loaded, read back as
the check's store reads them; a snapshot without them scans without marks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from matching.core import marks
from matching.core.hashindex import make_hash_index
from matching.core.matcher import Indexes, Thresholds
from spark.references import load_snapshot, write_snapshot
from tests.images import drawn_logo, transparent_logo


def _row(ref_id: int, mark: str | None, info: dict | None) -> dict:  # type: ignore[type-arg]
    return {"id": ref_id, "sha256_bytes": f"{ref_id:064x}", "sha256_pixels": f"{ref_id + 100:064x}",
            "phash": ref_id, "pdq": None, "pdq_quality": 0, "phash_max": None, "file": f"{ref_id}.png",
            "features": "", "mark": mark, "mark_info": info}


def test_marks_round_trip_through_the_snapshot(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    (storage / "marks").mkdir(parents=True)
    keyed, clear = marks.extract_mark(drawn_logo()), marks.extract_mark(transparent_logo().convert("RGB"),
                                                                        transparent_logo().getchannel("A"))
    assert keyed is not None and clear is not None and keyed.background and clear.background is None
    rows = [_row(1, None, None), _row(2, "marks/2.png", None)]  # no mark; a name without its info is none
    for ref_id, mark in ((3, keyed), (4, clear)):
        (storage / f"marks/{ref_id}.png").write_bytes(marks.mark_to_png(mark))
        rows.append(_row(ref_id, f"marks/{ref_id}.png", {"box": list(mark.box), "source": mark.source,
                                                         "background": list(mark.background) if mark.background else None}))
    ids = np.array([r["id"] for r in rows], dtype=np.int64)
    indexes = Indexes(phash=make_hash_index(1, codes=ids.astype(np.uint64).reshape(-1, 1), ids=ids),
                      pdq=make_hash_index(4, codes=np.zeros((0, 4), np.uint64), ids=np.zeros(0, np.int64)))
    dest = write_snapshot(tmp_path / "snap", rows=rows, indexes=indexes, thresholds=Thresholds())
    store = load_snapshot(dest, storage_root=f"file://{storage}").store
    assert store.mark(1) is None and store.mark(2) is None and store.mark(99) is None
    for ref_id, mark in ((3, keyed), (4, clear)):
        back = store.mark(ref_id)
        assert back is not None and (back.box, back.source, back.background) == (mark.box, mark.source, mark.background)
        assert np.array_equal(np.asarray(back.image), np.asarray(mark.image))
        assert store.mark(ref_id) is back  # read once per process

    # A snapshot written before marks (no marks*.npy) loads and has none.
    older = tmp_path / "older"
    write_snapshot(older, rows=rows, indexes=indexes, thresholds=Thresholds())
    for name in ("marks", "mark_boxes", "mark_sources", "mark_backgrounds"):
        (older / f"{name}.npy").unlink()
    assert load_snapshot(older, storage_root=f"file://{storage}").store.mark(3) is None
