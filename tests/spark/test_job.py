"""The Spark job for real: spark-submit, a JVM, Spark local[2], Parquet out (no Django).

One run serves every assertion of the successful case, to keep the suite fast.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spark.progress import read_progress
from spark.submit import build_submission, launch
from tests.images import encode, photo, photo_png, png_declaring, resized_jpeg, truncated_jpeg

GOOD = {
    "coffee.png": lambda: photo_png("coffee"),
    "sub dir/chelsea 'quoted' \"twice\".jpg": lambda: resized_jpeg("chelsea", 0.5),
    "ünïcødé/rocket.jpg": lambda: resized_jpeg("rocket", 0.7),
    "astronaut.png": lambda: photo_png("astronaut"),
    "camera.jpg": lambda: resized_jpeg("camera", 0.6),
    "horse.png": lambda: photo_png("horse"),
}
BAD = {
    "broken/truncated.jpg": (truncated_jpeg, "corrupt_image"),
    "broken/readme.txt": (lambda: b"plain text", "unsupported_format"),
    "broken/empty.jpg": (lambda: b"", "empty_file"),
    "broken/bomb.png": (lambda: png_declaring(8000, 8000), "too_many_pixels"),
    "broken/huge.png": (lambda: photo_png("coffee") + b"\0" * 1_200_000, "file_too_large"),
    "narrow.png": (lambda: encode(photo("coffee").resize((10, 200))), "image_too_small"),  # refused by the model
}
SKIPPED = "already-there.png"


def run_job(work: Path, *args: str, timeout: float = 240) -> tuple[int, str]:
    sub = build_submission(master="local[2]", job_args=["--work-dir", str(work), *args], work_dir=work)
    proc = launch(sub, work / "spark.log")
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, (work / "spark.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, monkeypatch_module):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("job")
    src, work, media = root / "src", root / "work", root / "media"
    for key, make in {**GOOD, **{k: v[0] for k, v in BAD.items()}, SKIPPED: lambda: photo_png("coins")}.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(make())
    work.mkdir()
    skip = root / "skip.jsonl"
    skip.write_text(json.dumps(SKIPPED) + "\n")
    embedder_log = root / "embedder.log"
    monkeypatch_module.setenv("FAKE_EMBEDDER_LOG", str(embedder_log))
    started = time.monotonic()
    code, log = run_job(work, "--source", str(src), "--partition-size", "2", "--max-bytes", "1500000",
                        "--skip-keys", str(skip), "--embed", "--embedder", "tests.spark.fake_embedder:FakeEmbedder",
                        "--store-root", f"file://{media}", "--store-prefix", "protected/7/9/bulk")
    return {"code": code, "log": log, "work": work, "media": media, "embedder_log": embedder_log,
            "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def monkeypatch_module():  # type: ignore[no-untyped-def]
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def output_rows(work: Path) -> dict[str, dict]:
    import pyarrow.dataset as ds

    files = [str(f) for f in (work / "output").glob("run-*/*.parquet")]
    return {row["key"]: row for row in ds.dataset(files, format="parquet").to_table().to_pylist()}


def test_job_completes_with_exact_counts_and_progress(finished_run):
    assert finished_run["code"] == 0, finished_run["log"][-3000:]
    progress = read_progress(finished_run["work"] / "progress.json")
    assert progress is not None
    assert progress["state"] == "done" and progress["application_id"].startswith("local-")
    total = len(GOOD) + len(BAD) + 1
    assert (progress["total"], progress["done"], progress["failed"], progress["skipped"]) == (
        total, len(GOOD), len(BAD), 1)
    assert progress["processed"] == progress["pending"] == total - 1


def test_output_has_one_row_per_key_with_reasons_and_exact_keys(finished_run):
    rows = output_rows(finished_run["work"])
    assert set(rows) == set(GOOD) | set(BAD)  # the skipped key was not computed; odd names kept exactly
    for key, (_, code) in BAD.items():
        assert rows[key]["error_code"] == code, rows[key]
        assert rows[key]["error_reason"]
    for key in GOOD:
        row = rows[key]
        assert row["error_code"] is None
        assert len(row["phash"]) == 16 and len(row["sha256_pixels"]) == 64 and row["width"] > 0
        assert len(row["embedding"]) == 8
        assert json.loads(row["signals"])["sha256_bytes"] == row["sha256_bytes"]
        assert (finished_run["media"] / row["stored_name"]).is_file()


def test_the_model_loads_once_per_python_worker_and_sees_batches(finished_run):
    events = [json.loads(line) for line in finished_run["embedder_log"].read_text().splitlines()]
    loads = [e["pid"] for e in events if e["event"] == "load"]
    batch_pids = {e["pid"] for e in events if e["event"] == "batch"}
    partitions = -(-(len(GOOD) + len(BAD)) // 2)
    assert len(loads) == len(set(loads)) == len(batch_pids) <= 2 < partitions  # workers reused across tasks
    assert max(e["size"] for e in events if e["event"] == "batch") == 2  # a partition's images, in one batch


def test_an_empty_source_fails_at_once_with_a_clear_message(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "work").mkdir()
    code, log = run_job(tmp_path / "work", "--source", str(tmp_path / "empty"))
    assert code == 2
    progress = read_progress(tmp_path / "work" / "progress.json")
    assert progress is not None and progress["state"] == "failed"
    assert progress["error"] == f"{tmp_path / 'empty'} holds no files"
    assert "source unusable" in log
