"""bench.evidence: the evidence PNG by zlib level, and the level the service writes."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from skimage import data
from PIL import Image

from bench import evidence as bench_evidence
from matching.core import evidence


def zlib_flevel(png: bytes) -> int:
    """FLEVEL of the PNG's zlib stream (RFC 1950: 0 fastest, 1 fast, 2 default, 3 maximum)."""
    at, idat = 8, b""
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        if kind == b"IDAT":
            idat += png[at + 8:at + 8 + length]
        at += 12 + length
    assert idat, "no image data"
    zlib.decompress(idat)  # a whole, valid stream
    return idat[1] >> 6


def test_the_service_writes_evidence_at_its_level_not_pillows_default() -> None:
    picture = Image.fromarray(data.astronaut())
    png = evidence.render_evidence(picture.resize((300, 300)), picture, None, title="none")
    assert evidence.PNG_LEVEL == 3
    assert zlib_flevel(png) == 1  # levels 2-5; Pillow's default, 6, writes 2


def test_the_levels_change_the_bytes_and_not_the_pixels(dataset: Path) -> None:
    items = bench_evidence.pairs(dataset, 2)
    assert len(items) == 2
    rows = bench_evidence.measure(items, [1, 9], repeat=1)
    assert [r.level for r in rows] == [1, 9]
    assert all(r.same_pixels for r in rows)
    assert rows[0].kib > rows[1].kib  # level 9 packs tighter than level 1
    assert evidence.PNG_LEVEL == 3  # restored
    text = bench_evidence.report(rows, 2, sum(1 for *_, v in items if v.accepted))
    assert "| 1 |" in text and "| 9 |" in text and "NO" not in text


def test_the_command_refuses_bad_levels(capsys) -> None:  # type: ignore[no-untyped-def]
    import pytest

    for bad in ("10", "x", ""):
        with pytest.raises(SystemExit) as exc:
            bench_evidence.main(["--levels", bad])
        assert exc.value.code == 2
    assert "--levels" in capsys.readouterr().err

