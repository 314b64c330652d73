"""The command-line contract of docs/cli.md: index_images and match_images."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Collection, ProtectedImage
from tests.images import photo_png, resized_jpeg, truncated_jpeg

pytestmark = pytest.mark.django_db

REFERENCES = ["coffee", "chelsea", "rocket", "astronaut"]


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    refs = tmp_path / "refs"
    (refs / "sub dir").mkdir(parents=True)
    for name in REFERENCES[:3]:
        (refs / f"{name}.png").write_bytes(photo_png(name))
    (refs / "sub dir" / "astronaut (1).png").write_bytes(photo_png("astronaut"))
    (refs / "broken.jpg").write_bytes(truncated_jpeg())
    (refs / "notes.txt").write_bytes(b"not an image")
    out, err = run("index_images", "--org", "acme", "--collection", "Brand photos", str(refs))
    assert "indexed 4, unchanged 0, failed 2 of 6 files" in out
    assert "skipped broken.jpg:" in err and "skipped notes.txt:" in err
    return refs


def test_index_images_creates_org_and_collection_and_keys_by_relative_path(indexed):
    collection = Collection.objects.get(organisation__slug="acme", slug="brand-photos")
    keys = set(ProtectedImage.objects.filter(collection=collection, status="indexed").values_list("key", flat=True))
    assert keys == {"coffee.png", "chelsea.png", "rocket.png", "sub dir/astronaut (1).png"}
    out, _ = run("index_images", "--org", "acme", "--collection", "Brand photos", str(indexed))
    assert "indexed 0, unchanged 4, failed 2" in out  # a rerun adds nothing twice


def test_index_images_in_process_queues_one_retroactive_recheck_for_the_run(tmp_path, monkeypatch):
    """As a Spark load does (matching/bulk/load.py): one re-check named by the run's first image,
    whose passes take every image the run indexed, not one task per image."""
    queued: list[tuple[str, tuple]] = []
    for where in ("matching.protection", "matching.retro"):
        monkeypatch.setattr(f"{where}.enqueue_on_commit", lambda name, *args, **kw: queued.append((name, args)))
    refs = tmp_path / "refs"
    refs.mkdir()
    for name in REFERENCES:
        (refs / f"{name}.png").write_bytes(photo_png(name))
    out, _ = run("index_images", "--org", "acme", "--collection", "Brand photos", str(refs))
    assert "indexed 4, unchanged 0, failed 0 of 4 files" in out
    first = ProtectedImage.objects.order_by("indexed_at", "pk").first()
    assert first is not None
    assert [q for q in queued if q[0] == "workers.tasks.recheck_suspects"] == [
        ("workers.tasks.recheck_suspects", ([first.pk],))]
    queued.clear()
    run("index_images", "--org", "acme", "--collection", "Brand photos", str(refs))
    assert queued == []  # a rerun that indexed nothing queues nothing

    # Interrupted after its first image (Ctrl-C): what it indexed is still searched for.
    from matching import protection

    real, calls = protection.protected_image_add, []

    def then_interrupted(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["key"])
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(**kwargs)

    monkeypatch.setattr("matching.management.commands.index_images.protected_image_add", then_interrupted)
    more = tmp_path / "more"
    more.mkdir()
    for name in ("horse", "camera"):
        (more / f"{name}.png").write_bytes(photo_png(name))
    with pytest.raises(KeyboardInterrupt):
        run("index_images", "--org", "acme", "--collection", "Brand photos", str(more))
    (first_new,) = ProtectedImage.objects.filter(key__in=["horse.png", "camera.png"])
    assert queued == [("workers.tasks.recheck_suspects", ([first_new.pk],))]


def test_match_images_jsonl_verdicts(indexed, tmp_path):
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "exact.png").write_bytes(photo_png("coffee"))
    (queries / "resized.jpg").write_bytes(resized_jpeg("chelsea", 0.4, 50))
    (queries / "unrelated1.jpg").write_bytes(resized_jpeg("horse", 1.0))
    (queries / "unrelated2.jpg").write_bytes(resized_jpeg("shepp_logan_phantom", 1.0))
    (queries / "zz-bad.jpg").write_bytes(truncated_jpeg())
    out, _ = run("match_images", "--org", "acme", "--format", "jsonl", "--top-k", "3", str(queries))
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["query"] for r in records] == ["exact.png", "resized.jpg", "unrelated1.jpg", "unrelated2.jpg",
                                             "zz-bad.jpg"]
    by = {r["query"]: r for r in records}
    assert by["exact.png"]["matches"][0] == {"key": "coffee.png", "collection": "Brand photos", "score": 1.0,
                                             "match": True, "verdict": "exact", "region": None}
    assert by["resized.jpg"]["matches"][0]["key"] == "chelsea.png"
    assert by["resized.jpg"]["matches"][0]["verdict"] == "near_duplicate"
    for name in ("unrelated1.jpg", "unrelated2.jpg"):
        assert not any(m["match"] for m in by[name]["matches"])
        assert len(by[name]["matches"]) <= 3
        scores = [m["score"] for m in by[name]["matches"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert "error" in by["zz-bad.jpg"] and "matches" not in by["zz-bad.jpg"]
    assert all(isinstance(r["elapsed_ms"], float) for r in records)


def test_match_images_single_file_query_is_reported_as_given(indexed, tmp_path):
    query = tmp_path / "one.png"
    query.write_bytes(photo_png("rocket"))
    out, _ = run("match_images", "--org", "acme", "--format", "jsonl", str(query), str(tmp_path / "missing.png"))
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["query"] == str(query) and first["matches"][0]["verdict"] == "exact"
    assert second["query"] == str(tmp_path / "missing.png") and "error" in second


def test_match_images_unknown_org_is_an_error():
    with pytest.raises(CommandError):
        run("match_images", "--org", "nobody", "x.png")


def test_index_images_missing_source_is_an_error(tmp_path):
    with pytest.raises(CommandError):
        run("index_images", "--org", "acme", "--collection", "c", str(tmp_path / "nope"))


def test_match_images_reports_cropped_and_rotated_copies_with_a_region(indexed, tmp_path):
    from PIL import Image

    from tests.images import photo

    queries = tmp_path / "modified"
    queries.mkdir()
    turned = photo("astronaut").rotate(7, resample=Image.BICUBIC, expand=True).crop((60, 40, 420, 400))
    turned.resize((300, 300)).save(queries / "astronaut.jpg", quality=70)
    photo("coffee").crop((100, 50, 500, 350)).save(queries / "coffee.jpg", quality=80)
    out, _ = run("match_images", "--org", "acme", "--format", "jsonl", str(queries))
    for record, key in zip((json.loads(line) for line in out.splitlines()),
                           ("sub dir/astronaut (1).png", "coffee.png")):
        best = record["matches"][0]
        assert best["key"] == key and best["match"] is True and best["verdict"] == "modified_copy"
        assert len(best["region"]) >= 4
        assert all(0 <= x <= 400 and 0 <= y <= 300 for x, y in best["region"])


def _command(data_dir: Path, *args: str, database_url: str | None = None,  # type: ignore[no-untyped-def]
             secret_key: str | None = "k3y-" + "x9Qz" * 13):
    """Run manage.py in a fresh process, as an operator would, against ``data_dir``."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "PYTEST", "DJANGO_SETTINGS"))}
    env.update(IMGPROTECT_DATA_DIR=str(data_dir), IMGPROTECT_CNN_ENABLED="false", PYTHONPATH=str(root))
    env.pop("SECRET_KEY", None)
    if database_url:
        env["DATABASE_URL"] = database_url
        if secret_key:
            env["SECRET_KEY"] = secret_key  # a deployment (DATABASE_URL set) must bring its own
    return subprocess.run([sys.executable, str(root / "manage.py"), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_finding_16_commands_set_up_a_fresh_embedded_database(tmp_path):
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "coffee.png").write_bytes(photo_png("coffee"))
    data = tmp_path / "fresh-data"  # never used before: no database file yet
    indexed = _command(data, "index_images", "--org", "acme", "--collection", "Photos", str(refs))
    assert indexed.returncode == 0, indexed.stderr
    assert "Traceback" not in indexed.stderr and "indexed 1, unchanged 0, failed 0" in indexed.stdout
    # match_images first, on a data directory of its own
    (refs / "query.png").write_bytes(photo_png("coffee"))
    other = _command(tmp_path / "other-data", "match_images", "--org", "acme", "--format", "jsonl",
                     str(refs / "query.png"))
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert other.stderr.strip() == "CommandError: no organisation 'acme'"
    matched = _command(data, "match_images", "--org", "acme", "--format", "jsonl", str(refs / "query.png"))
    assert matched.returncode == 0, matched.stderr
    assert json.loads(matched.stdout)["matches"][0]["verdict"] == "exact"


@pytest.mark.parametrize("command", [["index_images", "--org", "acme", "--collection", "c", "."],
                                     ["match_images", "--org", "acme", "x.png"]])
def test_finding_16_with_database_url_commands_say_what_to_run(tmp_path, command):
    done = _command(tmp_path / "data", *command, database_url=f"sqlite:///{tmp_path / 'external.sqlite3'}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "CommandError: the database is not set up or not up to date: run `python manage.py migrate` first"]


def test_a_deployment_without_a_secret_key_says_so_in_one_line(tmp_path):
    done = _command(tmp_path / "data", "match_images", "--org", "acme", "x.png",
                    database_url=f"sqlite:///{tmp_path / 'external.sqlite3'}", secret_key=None)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: SECRET_KEY is not set")
