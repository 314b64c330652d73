"""Hash exchange with Meta's Hasher-Matcher-Actioner and ThreatExchange, proved against the real
``threatexchange`` package from PyPI (its PDQ signal type, hasher, index and file exchange), not
against our own parser (docs/hash-exchange.md)."""
from __future__ import annotations

import csv
import io
import json

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageEnhance, ImageOps
from threatexchange.exchanges.impl.file_api import FileCollaborationConfig, LocalFileSignalExchangeAPI
from threatexchange.signal_type.pdq.pdq_hasher import pdq_from_bytes
from threatexchange.signal_type.pdq.pdq_index import PDQIndex
from threatexchange.signal_type.pdq.signal import PdqSignal

from matching.models import HashList, HashListEntry, Match, Webhook, WebhookDelivery
from matching.webhooks import match_data
from tests.conftest import client_for
from tests.factories import CollectionFactory, OrganisationFactory
from tests.images import encode, photo, photo_png

# Transactional, like production: tasks enqueued on commit run when the request commits.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def photos(org, api):  # type: ignore[no-untyped-def]
    collection = CollectionFactory(organisation=org, slug="photos")
    ids = {}
    for name in ("chelsea", "coffee"):
        response = api.post("/api/v1/images/", {"collection": collection.pk, "key": f"{name}.png",
                                                "file": SimpleUploadedFile(f"{name}.png", photo_png(name))})
        assert response.status_code == 201
        ids[name] = response.json()["id"]
    return collection, ids


def edited(name: str, *, mirror: bool = False) -> bytes:
    """A copy as it travels: brightened, halved, re-encoded as JPEG (and mirrored). PDQ, like any
    whole-frame hash, does not survive crops: 4 % a side moves it 76-98 bits, 1 % up to 26."""
    img = photo(name)
    img = img.resize((img.width // 2, img.height // 2), Image.LANCZOS)
    img = ImageEnhance.Brightness(img).enhance(1.1)
    return encode(ImageOps.mirror(img) if mirror else img, "JPEG", quality=75)


def export(api, collection_id: int, fmt: str, variants: bool = False) -> str:  # type: ignore[no-untyped-def]
    response = api.get(f"/api/v1/collections/{collection_id}/hashes/?format={fmt}&variants={str(variants).lower()}")
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content).decode()


def read_with_threatexchange(tmp_path, text: str, signal_type: str | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """The signals threatexchange's file-based exchange reads from ``text`` (a file on disk, as its CLI
    takes it), each validated by its PDQ signal type."""
    path = tmp_path / "exported.txt"
    path.write_text(text)
    api = LocalFileSignalExchangeAPI.for_collab(
        FileCollaborationConfig(name="imgprotect", filename=str(path), signal_type=signal_type))
    signals = []
    for delta in api.fetch_iter([PdqSignal], None):
        for (kind, signal) in delta.updates:
            assert kind == PdqSignal.get_name()
            signals.append(PdqSignal.validate_signal_str(signal))
    return signals


def test_export_is_read_by_threatexchange_and_matches_an_edited_copy(api, photos, tmp_path):
    collection, ids = photos
    te = export(api, collection.pk, "te")
    signals = read_with_threatexchange(tmp_path, te)
    assert len(signals) == 2
    # the bare format, as HMA exports a bank: the file exchange reads it told the signal type
    assert sorted(read_with_threatexchange(tmp_path, export(api, collection.pk, "pdq"), signal_type="pdq")) == \
        sorted(signals)
    rows = list(csv.DictReader(io.StringIO(export(api, collection.pk, "csv"))))
    assert {r["key"]: int(r["image_id"]) for r in rows} == {"chelsea.png": ids["chelsea"], "coffee.png": ids["coffee"]}
    assert sorted(r["pdq"] for r in rows) == sorted(signals)
    by_pdq = {r["pdq"]: r["key"] for r in rows}

    # threatexchange hashes an edited copy itself and finds it in its own index of our export
    index = PDQIndex.build([(s, by_pdq[s]) for s in signals])
    copy_hash, quality = pdq_from_bytes(edited("chelsea"))
    assert quality >= PdqSignal.QUALITY_THRESHOLD
    found = index.query(copy_hash)
    assert [m.metadata for m in found] == ["chelsea.png"]
    assert found[0].similarity_info.distance <= 31
    assert PdqSignal.compare_hash(copy_hash, next(s for s in signals if by_pdq[s] == "chelsea.png")).match
    assert not index.query(pdq_from_bytes(photo_png("rocket"))[0])


def test_export_with_variants_finds_a_mirrored_copy(api, photos, tmp_path):
    collection, ids = photos
    mirrored, _ = pdq_from_bytes(edited("coffee", mirror=True))
    plain = read_with_threatexchange(tmp_path, export(api, collection.pk, "te"))
    assert not PDQIndex.build([(s, s) for s in plain]).query(mirrored)

    rows = list(csv.DictReader(io.StringIO(export(api, collection.pk, "csv", variants=True))))
    assert len(rows) == 16 and {r["label"] for r in rows} >= {"original", "flip_horizontal", "rotate90"}
    variants = read_with_threatexchange(tmp_path, export(api, collection.pk, "te", variants=True))
    assert sorted(variants) == sorted(r["pdq"] for r in rows)
    found = PDQIndex.build([(r["pdq"], (r["key"], r["label"])) for r in rows]).query(mirrored)
    assert [m.metadata for m in found] == [("coffee.png", "flip_horizontal")]


def test_the_commands_round_trip(photos, tmp_path, org):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    collection, _ = photos
    out = tmp_path / "photos.txt"
    call_command("export_hashes", "--org", "acme", "--collection", collection.slug, "--output", str(out))
    signals = read_with_threatexchange(tmp_path, out.read_text())
    assert sorted(signals) == sorted(collection.images.values_list("pdq", flat=True))
    call_command("import_hash_list", "--org", "acme", "--name", "round trip", str(out), stdout=io.StringIO())
    assert sorted(HashListEntry.objects.values_list("pdq", flat=True)) == sorted(signals)
    bad = tmp_path / "bad.txt"
    bad.write_text("pdq " + "g" * 64 + "\n")
    with pytest.raises(CommandError, match="line 1: not a hexadecimal"):
        call_command("import_hash_list", "--org", "acme", "--name", "bad", str(bad))
    with pytest.raises(CommandError, match="no collection"):
        call_command("export_hashes", "--org", "acme", "--collection", "nope")


def import_list(api, name: str, content: bytes, filename: str = "list.csv", **fields):  # type: ignore[no-untyped-def]
    return api.post("/api/v1/hash-lists/", {"name": name, "file": SimpleUploadedFile(filename, content), **fields},
                    format="multipart")


def test_an_imported_list_is_matched_by_a_check_with_verdict_hash_list(api, org):
    # A partner's list, hashed by threatexchange's own hasher; imgprotect protects no image at all.
    rocket, _ = pdq_from_bytes(photo_png("rocket"))
    other = PdqSignal.get_examples()[0]
    content = f"pdq,label\n{other},bridge\n{rocket},rocket poster\n".encode()
    response = import_list(api, "partner-bank", content, alert_emails="trust@acme.test")
    assert response.status_code == 201, response.json()
    assert response.json()["entry_count"] == 2

    body = api.post("/api/v1/checks/?wait=10", {"file": SimpleUploadedFile("s.jpg", edited("rocket"))},
                    format="multipart").json()
    assert body["status"] == "done", body
    assert body["result"]["verdict"] == "hash_list" and body["result"]["match"] is True
    [hit] = body["result"]["hash_list_matches"]
    assert hit["hash_list"] == "partner-bank" and hit["label"] == "rocket poster" and hit["distance"] <= 31
    [match] = body["matches"]
    assert match["verdict"] == "hash_list" and match["image_id"] is None and match["key"] is None
    assert match["hash_list"]["name"] == "partner-bank" and match["hash_list"]["pdq"] == rocket
    assert match["signal_scores"]["pdq_distance"] == hit["distance"]
    # told like any match: the list's recipients by e-mail, webhooks with the list in place of an image
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["trust@acme.test"]
    assert "partner-bank: rocket poster" in mail.outbox[0].body
    data = match_data(Match.objects.get(pk=match["id"]))
    assert data["protected_image"] is None and data["hash_list"]["label"] == "rocket poster"

    # the query's flip/rotation variants are searched too; unrelated pictures match nothing
    mirrored = api.post("/api/v1/checks/?wait=10", {"file": SimpleUploadedFile("m.jpg", edited("rocket", mirror=True))},
                        format="multipart").json()
    assert mirrored["result"]["hash_list_matches"][0]["variant"] == "flip_horizontal"
    unrelated = api.post("/api/v1/checks/?wait=10", {"file": SimpleUploadedFile("c.png", photo_png("coffee"))},
                         format="multipart").json()
    assert unrelated["result"]["verdict"] == "none" and unrelated["matches"] == []

    # a deleted list matches no more
    assert api.delete(f"/api/v1/hash-lists/{response.json()['id']}/").status_code == 204
    again = api.post("/api/v1/checks/?wait=10", {"file": SimpleUploadedFile("s.jpg", edited("rocket"))},
                     format="multipart").json()
    assert again["result"]["verdict"] == "none"


def test_hma_lookup_answers_in_hma_shape(api, org, photos):
    collection, ids = photos
    chelsea, _ = pdq_from_bytes(edited("chelsea"))  # as an HMA client would hash its content
    assert import_list(api, "PARTNER", f"{chelsea}\n".encode(), filename="list.txt").status_code == 201
    entry = HashListEntry.objects.get()

    response = api.get(f"/m/lookup?signal={chelsea}&signal_type=pdq")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"photos", "PARTNER"}
    [image_hit] = body["photos"]
    assert image_hit["bank_content_id"] == ids["chelsea"] and int(image_hit["distance"]) <= 31
    assert body["PARTNER"] == [{"bank_content_id": entry.pk, "distance": "0"}]
    assert set(api.get(f"/m/lookup?signal={chelsea}&signal_type=pdq&banks=PARTNER").json()) == {"PARTNER"}
    unrelated, _ = pdq_from_bytes(photo_png("rocket"))
    assert api.get(f"/m/lookup?signal={unrelated}&signal_type=pdq").json() == {}

    raw = api.get(f"/m/raw_lookup?signal={chelsea}&signal_type=pdq").json()
    assert sorted(raw["matches"]) == sorted([ids["chelsea"], entry.pk])
    raw = api.get(f"/m/raw_lookup?signal={chelsea}&signal_type=pdq&include_distance=true").json()
    assert {"bank_content_id": entry.pk, "distance": "0"} in raw["matches"]

    posted = api.post("/m/lookup", {"photo": SimpleUploadedFile("c.jpg", edited("chelsea"))}, format="multipart")
    assert posted.status_code == 200, posted.json()
    assert posted.json()["pdq"]["photos"][0]["bank_content_id"] == ids["chelsea"]
    assert "PARTNER" in posted.json()["pdq"]


@pytest.mark.parametrize("content, reason", [
    (b"abc\n", "64 hex digits"),
    (("z" * 64 + "\n").encode(), "not a hexadecimal"),
    (("a" * 64 + "\n" + "b" * 63 + "\n").encode(), "line 2"),
    (("pdq,label\n" + "a" * 64 + ",=HYPERLINK(\"http://evil\")\n").encode(), "formula"),
    (("pdq,label\n" + "a" * 64 + ",@SUM(A1)\n").encode(), "formula"),
    (("md5 " + "a" * 32 + "\n").encode(), "only PDQ"),
    (b"\xff\xfe\x00", "UTF-8"),
    (b"label,quality\nx,1\n", "no 'pdq' column"),
    (b"\n\n# nothing\n", "no PDQ hash"),
])
def test_a_bad_list_is_refused_whole(api, content, reason):
    response = import_list(api, "bad", content)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_hash_list"
    assert reason in response.json()["detail"]
    assert not HashList.objects.exists() and not HashListEntry.objects.exists()


def test_import_limits_and_names(api, monkeypatch):
    from matching import hashlists

    monkeypatch.setattr(hashlists, "MAX_IMPORT_BYTES", 1000)
    big = import_list(api, "big", ("a" * 64 + "\n").encode() * 20)
    assert big.status_code == 400 and "MB" in str(big.json())
    monkeypatch.setattr(hashlists, "MAX_IMPORT_BYTES", 10**6)
    monkeypatch.setattr(hashlists, "MAX_IMPORT_ENTRIES", 2)
    many = import_list(api, "many", "".join(f"{i:064x}\n" for i in range(3)).encode())
    assert many.status_code == 400 and "at most 2" in many.json()["detail"]
    assert import_list(api, "two\nlines", b"a" * 64).status_code == 400
    assert not HashList.objects.exists()
    assert import_list(api, "ok", ("A" * 64).encode()).status_code == 201
    assert HashListEntry.objects.get().pdq == "a" * 64  # stored as threatexchange writes it
    assert import_list(api, "ok", ("b" * 64).encode()).status_code == 409
    assert client_for(api_org := HashList.objects.get().organisation, "member").post(
        "/api/v1/hash-lists/", {"name": "m", "file": SimpleUploadedFile("l.txt", b"c" * 64)},
        format="multipart").status_code == 403
    assert api_org.hash_lists.count() == 1


def test_bad_lookups_and_exports_are_400(api, photos):
    collection, _ = photos
    for query in ("signal_type=pdq", f"signal={'a' * 64}", f"signal={'a' * 63}&signal_type=pdq",
                  f"signal={'A' * 64}&signal_type=pdq", f"signal={'a' * 64}&signal_type=md5"):
        response = api.get(f"/m/lookup?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"] == "invalid"
    assert api.post("/m/lookup", {"video": SimpleUploadedFile("c.png", photo_png("coffee"))},
                    format="multipart").status_code == 400
    assert api.post("/m/lookup", {"photo": SimpleUploadedFile("c.png", b"not an image")},
                    format="multipart").status_code == 400
    assert api.get(f"/api/v1/collections/{collection.pk}/hashes/?format=xml").status_code == 400
    assert api.get(f"/api/v1/collections/{collection.pk}/hashes/?variants=maybe").status_code == 400
    assert api.get("/api/v1/collections/99999999999999999999/hashes/").status_code == 404


def test_other_organisations_see_nothing(api, photos):
    collection, _ = photos
    response = import_list(api, "acme-list", ("c" * 64).encode())
    list_id = response.json()["id"]
    other = client_for(OrganisationFactory(slug="globex"))
    assert other.get(f"/api/v1/collections/{collection.pk}/hashes/").status_code == 404
    assert other.get(f"/api/v1/hash-lists/{list_id}/").status_code == 404
    assert other.delete(f"/api/v1/hash-lists/{list_id}/").status_code == 404
    assert other.get("/api/v1/hash-lists/").json()["results"] == []
    pdq = collection.images.first().pdq
    assert other.get(f"/m/lookup?signal={pdq}&signal_type=pdq").json() == {}
    assert other.get(f"/m/lookup?signal={'c' * 64}&signal_type=pdq").json() == {}
    assert api.get(f"/m/lookup?signal={'c' * 64}&signal_type=pdq").json() == {
        "acme-list": [{"bank_content_id": HashListEntry.objects.get().pk, "distance": "0"}]}
    assert client_for(OrganisationFactory(slug="initech")).get("/m/lookup").status_code == 400
    from rest_framework.test import APIClient

    assert APIClient().get(f"/m/lookup?signal={pdq}&signal_type=pdq").status_code == 401


def test_a_bulk_scan_reports_pictures_on_a_hash_list(api, org, tmp_path):
    """The scan's loader matches each scanned picture's PDQ (and its variants) against the hash lists,
    once however often the output is loaded; a scan limited to a collection leaves the lists out."""
    from matching.bulk import services as bulk_services
    from matching.bulk.models import BulkJob
    from matching.core.loading import load_image
    from matching.core.signals import query_signals
    from tests.bulk.test_services import ok_row, write_output

    rocket, _ = pdq_from_bytes(photo_png("rocket"))
    assert import_list(api, "partner", f"pdq,label\n{rocket},rocket poster\n".encode(),
                       alert_emails="trust@acme.test").status_code == 201
    job = BulkJob.objects.create(organisation=org, kind="scan", source=str(tmp_path), status="loading", attempts=1)
    rows = [ok_row("shop/rocket-mirrored.jpg", edited("rocket", mirror=True)), ok_row("shop/coffee.png",
                                                                                      photo_png("coffee"))]
    for row in rows:  # a scan's rows carry the query-side variants (spark/compute.py)
        data = edited("rocket", mirror=True) if "rocket" in row["key"] else photo_png("coffee")
        row["signals"] = json.dumps(query_signals(load_image(data)))
    write_output(job, rows)
    hook = Webhook.objects.create(organisation=org, url="https://example.com/hook", secret="whsec_x")
    for _ in range(2):
        bulk_services.bulkjob_load(job=job)
    [match] = Match.objects.filter(organisation=org)
    # The scan's one webhook summary names the hash list (such a match has no collection), once.
    [delivery] = WebhookDelivery.objects.filter(webhook=hook, event="scan.matches")
    data = delivery.payload["data"]
    assert data["collection"] is None and data["hash_list"]["name"] == "partner" and data["count"] == 1
    assert match.verdict == "hash_list" and match.suspect_key.endswith("shop/rocket-mirrored.jpg")
    assert match.hash_list_entry.label == "rocket poster" and match.signal_scores["pdq_variant"] == "flip_horizontal"
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["trust@acme.test"]

    scoped = BulkJob.objects.create(organisation=org, kind="scan", source=str(tmp_path / "b"), status="loading",
                                    attempts=1, collection=CollectionFactory(organisation=org, slug="only"))
    write_output(scoped, rows)
    bulk_services.bulkjob_load(job=scoped)
    assert Match.objects.filter(organisation=org).count() == 1
