"""The executor's work on one partition, run in-process (no JVM): one row per key, exact reasons."""
from __future__ import annotations

import json
from pathlib import Path

from matching.core.loading import load_image
from matching.core.signals import compute_signals
from spark import compute
from spark.compute import FIELDS, JobOptions, process_partition
from spark.sources import LocalSource
from tests.images import encode, photo, photo_png, png_declaring, resized_jpeg, truncated_jpeg

NAMES = [name for name, _ in FIELDS]


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> None:
        self.value += n


def bad_and_good(root: Path) -> dict[str, bytes]:
    files = {
        "good/coffee.png": photo_png("coffee"),
        "good/chelsea copy 'q'.jpg": resized_jpeg("chelsea", 0.5),
        "bad/truncated.jpg": truncated_jpeg(),
        "bad/notes.txt": b"these are not pixels",
        "bad/empty.png": b"",
        "bad/bomb.png": png_declaring(9000, 9000),
        "bad/oversized.png": photo_png("coffee") + b"\0" * 100_000,  # larger than the byte limit below
        "bad/tiny.png": encode(photo("coffee").resize((4, 4))),
    }
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def rows_by_key(rows) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {row[0]: dict(zip(NAMES, row, strict=True)) for row in rows}


def test_one_row_per_key_with_exact_reasons(tmp_path: Path):
    files = bad_and_good(tmp_path)
    entries = [(e.key, e.size) for e in LocalSource(tmp_path).list()]
    limit = len(files["bad/oversized.png"]) - 1
    assert len(files["good/coffee.png"]) < limit
    ok, failed = Counter(), Counter()
    out = rows_by_key(process_partition(entries, JobOptions(source=str(tmp_path), max_bytes=limit),
                                        (ok, failed)))
    assert set(out) == set(files)
    codes = {key: row["error_code"] for key, row in out.items()}
    assert codes == {
        "good/coffee.png": None,
        "good/chelsea copy 'q'.jpg": None,
        "bad/truncated.jpg": "corrupt_image",
        "bad/notes.txt": "unsupported_format",
        "bad/empty.png": "empty_file",
        "bad/bomb.png": "too_many_pixels",
        "bad/oversized.png": "file_too_large",
        "bad/tiny.png": "image_too_small",
    }
    assert (ok.value, failed.value) == (2, 6)
    assert all(out[k]["error_reason"] for k, c in codes.items() if c)
    coffee = out["good/coffee.png"]
    expected = compute_signals(load_image(files["good/coffee.png"]))
    assert json.loads(coffee["signals"]) == expected  # exactly what the in-process path stores
    assert (coffee["sha256_bytes"], coffee["phash"], coffee["width"], coffee["height"]) == (
        expected["sha256_bytes"], expected["phash"], expected["width"], expected["height"])
    assert coffee["pdq"] == expected.get("pdq") and coffee["embedding"] is None and coffee["stored_name"] is None


def test_scan_rows_carry_query_variants(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(photo_png("coffee"))
    (row,) = process_partition([("a.png", 1)], JobOptions(source=str(tmp_path), kind="scan"))
    signals = json.loads(row[NAMES.index("signals")])
    # A scan row carries the eight dihedral variants the check's query uses (flipped or turned copies).
    assert len(signals["phash_variants"]) == 8 and len(set(signals["phash_variants"])) == 8


def test_index_rows_store_bytes_by_content(tmp_path: Path):
    src, media = tmp_path / "src", tmp_path / "media"
    src.mkdir()
    data = photo_png("coffee")
    (src / "one.png").write_bytes(data)
    (src / "same bytes.png").write_bytes(data)
    options = JobOptions(source=str(src), store_root=f"file://{media}", store_prefix="protected/1/2/bulk",
                         features_prefix="features/1/2/bulk")
    rows = rows_by_key(process_partition([("one.png", 0), ("same bytes.png", 0)], options))
    names = {(row["stored_name"], row["features_name"]) for row in rows.values()}
    assert len(names) == 1  # content-addressed: a rerun or a second key rewrites, never copies
    name, features = names.pop()
    assert name.startswith("protected/1/2/bulk/") and name.endswith(".png")
    assert (media / name).read_bytes() == data
    from matching.core.geometry import extract_features, features_from_bytes

    assert features.startswith("features/1/2/bulk/") and features.endswith(".npz")
    stored = features_from_bytes((media / features).read_bytes())
    assert len(stored.keypoints) == len(extract_features(photo("coffee")).keypoints)


def test_embeddings_come_in_batches_from_one_model_per_process(tmp_path: Path, monkeypatch):
    log = tmp_path / "embedder.log"
    monkeypatch.setenv("FAKE_EMBEDDER_LOG", str(log))
    monkeypatch.setattr(compute, "_embedders", {})
    keys = []
    for n, name in enumerate(["coffee", "chelsea", "rocket", "astronaut", "camera"]):
        (tmp_path / f"{n}.png").write_bytes(photo_png(name))
        keys.append((f"{n}.png", 0))
    (tmp_path / "narrow.png").write_bytes(encode(photo("coffee").resize((10, 300))))
    keys.insert(2, ("narrow.png", 0))
    options = JobOptions(source=str(tmp_path), embed=True, embedder="tests.spark.fake_embedder:FakeEmbedder",
                         batch_size=4)
    first = rows_by_key(process_partition(keys[:4], options))
    second = rows_by_key(process_partition(keys[4:], options))
    rows = {**first, **second}
    assert rows["narrow.png"]["error_code"] == "image_too_small"  # refused by the model alone
    for key, _ in keys:
        if key != "narrow.png":
            vector = rows[key]["embedding"]
            assert len(vector) == 8 and abs(sum(v * v for v in vector) - 1) < 1e-3
            assert json.loads(rows[key]["signals"])["embedding"] == vector
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in events].count("load") == 1  # once per process, across partitions
    assert [e["size"] for e in events if e["event"] == "batch" and e["size"] > 1][:1] == [4]


def test_overlong_keys_are_reported_not_stored(tmp_path: Path):
    (row,) = process_partition([("x" * 1025, 1)], JobOptions(source=str(tmp_path)))
    assert row[NAMES.index("error_code")] == "invalid_key"


def test_a_scan_embeds_whole_pictures_in_batches_and_decides_as_one_at_a_time(tmp_path: Path, monkeypatch):
    """The scan's first CNN pass takes its vectors from one batch per ``batch_size`` pictures; the
    matches are those of pictures matched one at a time, and a picture that fails stays one row."""
    from bench.throughput import write_references

    log = tmp_path / "embedder.log"
    monkeypatch.setenv("FAKE_EMBEDDER_LOG", str(log))
    monkeypatch.setattr(compute, "_embedders", {})
    monkeypatch.setattr(compute, "_matchers", {})
    fake = "tests.spark.fake_embedder:FakeTileEmbedder"
    (tmp_path / "refs").mkdir()
    for name in ("coffee", "chelsea", "rocket"):
        (tmp_path / "refs" / f"{name}.png").write_bytes(photo_png(name))
    snapshot = write_references(tmp_path / "refs", tmp_path / "store", tmp_path / "snapshot", embedder=fake)
    crawl = tmp_path / "crawl"
    crawl.mkdir()
    files = {"a.jpg": resized_jpeg("coffee", 0.5), "b.png": photo_png("astronaut"), "c.jpg": truncated_jpeg(),
             "d.png": encode(photo("chelsea").crop((0, 0, 300, 200)))}
    for key, data in files.items():
        (crawl / key).write_bytes(data)
    options = JobOptions(source=str(crawl), kind="scan", embed=True, embedder=fake, batch_size=2,
                         store_root=f"file://{tmp_path / 'store'}", references=str(snapshot), evidence=False)
    keys = [(key, 0) for key in sorted(files)]
    rows = rows_by_key(process_partition(keys, options))
    signals_fn = compute._signals_function("scan")
    alone = {key: compute._one(key, size, options, signals_fn)[0] for key, size in keys}
    assert list(rows) == sorted(files)
    assert rows["c.jpg"]["error_code"] == alone["c.jpg"]["error_code"] == "corrupt_image"
    for key in ("a.jpg", "b.png", "d.png"):
        assert rows[key]["error_code"] is None
        assert json.loads(rows[key]["matches"]) == json.loads(alone[key]["matches"])
    assert [m["reference_id"] for m in json.loads(rows["a.jpg"]["matches"])][:1] == [2]  # coffee (refs in key order: chelsea, coffee, rocket), resized
    sizes = [json.loads(line).get("size") for line in log.read_text().splitlines()]
    assert 2 in sizes  # a batch of two whole pictures (the pictures of the first pair)


def test_a_scan_embeds_only_beside_references_its_own_network_embedded(tmp_path: Path, monkeypatch):
    """The snapshot records the network that made its vectors; an executor whose embedder is another
    (a new head on the workers, the references not re-embedded yet) scans without the CNN rather than
    comparing vectors of two networks (docs/training/embedder.md)."""
    import json as json_module

    from bench.throughput import write_references

    monkeypatch.setattr(compute, "_embedders", {})
    monkeypatch.setattr(compute, "_matchers", {})
    fake = "tests.spark.fake_embedder:FakeTileEmbedder"
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "coffee.png").write_bytes(photo_png("coffee"))
    snapshot = write_references(tmp_path / "refs", tmp_path / "store", tmp_path / "snapshot", embedder=fake)
    manifest = json_module.loads((snapshot / "manifest.json").read_text())
    assert manifest["vectors"] and manifest["embedding_model"] == f"spec:{fake}"
    options = JobOptions(source=str(tmp_path), kind="scan", embed=True, embedder=fake,
                         store_root=f"file://{tmp_path / 'store'}", references=str(snapshot), evidence=False)
    assert compute.scan_matcher(options).embedder is not None

    manifest["embedding_model"] = "0123456789abcdef-57934424"
    (snapshot / "manifest.json").write_text(json_module.dumps(manifest))
    monkeypatch.setattr(compute, "_matchers", {})
    monkeypatch.setattr("spark.references._cache", {})
    assert compute.scan_matcher(options).embedder is None


def test_the_throughput_benchmarks_snapshot_holds_the_logos_marks(tmp_path: Path, monkeypatch):
    """``bench.throughput`` scans against a snapshot written as a scan job writes one: a logo's
    mark and its views are in it, so the scan rows it reports pay for the mark search."""
    from bench.throughput import write_references
    from matching.core.marks import MARK_VIEWS
    from spark.references import load_snapshot
    from tests.images import transparent_logo

    monkeypatch.setattr(compute, "_embedders", {})
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "acme.png").write_bytes(encode(transparent_logo(), "PNG"))
    (tmp_path / "refs" / "coffee.png").write_bytes(photo_png("coffee"))
    snapshot = write_references(tmp_path / "refs", tmp_path / "store", tmp_path / "snapshot",
                                embedder="tests.spark.fake_embedder:FakeTileEmbedder")
    loaded = load_snapshot(snapshot, storage_root=f"file://{tmp_path / 'store'}")
    assert loaded.store.mark(1) is not None and loaded.store.mark(2) is None  # ids in key order
    assert len(loaded.indexes.vectors) == 2 + MARK_VIEWS


def test_index_rows_carry_a_logos_mark_as_the_in_process_path_stores_it(tmp_path: Path, monkeypatch):
    """A logo uploaded as an RGBA PNG: the executor keys its mark out, stores the mark's PNG under
    ``marks_prefix``, and embeds the mark's views in the same batch as the pictures, so a logo
    indexed in bulk is looked for in scenes as one indexed one at a time is (issue 13, item 1)."""
    from PIL import Image

    from matching.core.marks import MARK_VIEWS, extract_mark, mark_info, mark_views
    from tests.images import transparent_logo
    from tests.spark.fake_embedder import FakeEmbedder

    monkeypatch.setattr(compute, "_embedders", {})
    src, media = tmp_path / "src", tmp_path / "media"
    src.mkdir()
    logo = encode(transparent_logo(), "PNG")
    (src / "acme.png").write_bytes(logo)
    (src / "coffee.png").write_bytes(photo_png("coffee"))
    drawn = Image.new("RGB", (320, 240), (200, 200, 200))  # a grey card with a faint square: nothing to hash
    drawn.paste((190, 190, 190), (140, 100, 180, 140))
    plain = encode(drawn)
    (src / "plain.png").write_bytes(plain)
    options = JobOptions(source=str(src), embed=True, embedder="tests.spark.fake_embedder:FakeEmbedder",
                         store_root=f"file://{media}", store_prefix="protected/1/2/bulk",
                         features_prefix="features/1/2/bulk", marks_prefix="marks/1/2/bulk")
    rows = rows_by_key(process_partition([("acme.png", 0), ("coffee.png", 0), ("plain.png", 0)], options))

    loaded = load_image(logo)
    mark = extract_mark(loaded.image, loaded.alpha, frame=(loaded.width, loaded.height))
    assert mark is not None
    acme = rows["acme.png"]
    assert acme["mark_name"].startswith("marks/1/2/bulk/") and acme["mark_name"].endswith(".png")
    with Image.open(media / acme["mark_name"]) as stored:
        assert stored.mode == "RGBA" and stored.size == mark.image.size
        assert stored.tobytes() == mark.image.tobytes()  # lossless: the mask as extracted
    assert json.loads(acme["mark_info"]) == mark_info(mark) and mark_info(mark)["source"] == "alpha"
    views = FakeEmbedder().embed(mark_views(mark))
    assert len(acme["mark_embeddings"]) == MARK_VIEWS * FakeEmbedder.dim
    assert [round(v, 4) for v in acme["mark_embeddings"]] == [round(float(v), 4) for v in views.reshape(-1)]
    assert acme["embedding"] != acme["mark_embeddings"][: FakeEmbedder.dim]  # the picture's own vector apart
    from matching.core.geometry import extract_features

    assert acme["keypoints"] == len(extract_features(loaded.image, frame=(loaded.width, loaded.height)))
    coffee = rows["coffee.png"]  # a photo filled edge to edge has no mark
    assert (coffee["mark_name"], coffee["mark_info"], coffee["mark_embeddings"]) == (None, None, None)
    assert coffee["embedding"] is not None and coffee["keypoints"] > 0
    # The flags the picture earns on its own, as the in-process path gives them.
    from matching.protection import protection_flags, reference_signals

    monkeypatch.setattr("matching.protection.get_embedder", lambda: None)
    for key, data in (("acme.png", logo), ("coffee.png", photo_png("coffee")), ("plain.png", plain)):
        here = load_image(data)
        assert json.loads(rows[key]["flags"]) == [f.as_json() for f in protection_flags(here, reference_signals(here))]
    assert json.loads(coffee["flags"]) == []
    assert [f["code"] for f in json.loads(rows["plain.png"]["flags"])] == ["flat", "few_features"]
