"""Checks end to end on the embedded default: submit, match, report, alert."""
from __future__ import annotations

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import ProtectedImage
from matching import services
from matching.alerts import match_alerts_send
from matching.models import Check, Match
from tests.factories import CollectionFactory
from tests.images import drawn_logo, encode, photo, photo_png, resized_jpeg, truncated_jpeg

# Transactional, like production: tasks enqueued on commit run when the request commits.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def protected(org, api):  # type: ignore[no-untyped-def]
    collection = CollectionFactory(organisation=org, slug="photos", alert_emails="legal@acme.test, ops@acme.test")
    for name in ("coffee", "chelsea", "rocket", "astronaut"):
        response = api.post("/api/v1/images/", {"collection": collection.pk, "key": f"{name}.png",
                                                "file": SimpleUploadedFile(f"{name}.png", photo_png(name))})
        assert response.status_code == 201
    assert ProtectedImage.objects.filter(status="indexed").count() == 4
    return collection


def submit(api, data: bytes, name="suspect.jpg", wait=None, **fields):  # type: ignore[no-untyped-def]
    url = "/api/v1/checks/" + (f"?wait={wait}" if wait is not None else "")
    return api.post(url, {"file": SimpleUploadedFile(name, data), **fields}, format="multipart")


def test_resized_reencoded_copy_is_a_near_duplicate_and_alerts(api, protected):
    response = submit(api, resized_jpeg("chelsea", 0.5, 60), wait=5)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "done"
    assert body["result"]["verdict"] == "near_duplicate"
    best = body["result"]["candidates"][0]
    assert best["key"] == "chelsea.png" and best["match"] is True
    assert best["signal_scores"]["phash_distance"] <= 8
    assert [m["key"] for m in body["matches"]] == ["chelsea.png"]
    # the alert goes to every recipient of the collection, once
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["legal@acme.test", "ops@acme.test"]
    assert "chelsea.png" in mail.outbox[0].body
    match_alerts_send(check_id=body["id"])
    assert len(mail.outbox) == 1


def test_finding_04_a_large_upscaled_copy_is_found_and_reported_at_its_own_size(api, protected):
    """Matched reduced to the working size (at most 2048 px), the 7000x4600 copy is still found;
    the result reports the picture's own size."""
    from PIL import Image

    response = submit(api, encode(photo("chelsea").resize((7000, 4600), Image.BICUBIC), "JPEG", quality=80), wait=30)
    body = response.json()
    assert body["status"] == "done", body
    assert body["result"]["candidates"][0]["key"] == "chelsea.png"
    assert [m["key"] for m in body["matches"]] == ["chelsea.png"]
    assert (body["result"]["signals"]["width"], body["result"]["signals"]["height"]) == (7000, 4600)


def test_identical_copy_is_exact(api, protected):
    body = submit(api, photo_png("rocket"), "rocket.png", wait=5).json()
    assert body["result"]["verdict"] == "exact"
    assert body["matches"][0]["score"] == 1.0
    # same pixels in another container is still exact
    body = submit(api, encode(photo("rocket"), "BMP"), "rocket.bmp", wait=5).json()
    assert body["result"]["verdict"] == "exact"


def test_unrelated_image_matches_nothing(api, protected):
    body = submit(api, resized_jpeg("horse", 0.8), wait=5).json()
    assert body["status"] == "done"
    assert body["result"]["verdict"] == "none" and body["matches"] == []
    assert all(not c["match"] for c in body["result"]["candidates"])
    assert Match.objects.count() == 0 and len(mail.outbox) == 0


def test_without_wait_the_answer_is_202_with_a_url(api, protected):
    response = submit(api, resized_jpeg("coffee"))
    assert response.status_code == 202
    body = response.json()
    assert body["url"].endswith(f"/api/v1/checks/{body['id']}/") and response["Location"]
    assert api.get(f"/api/v1/checks/{body['id']}/").status_code == 200


@pytest.mark.parametrize("wait", ["abc", "-1", "9999"])
def test_bad_wait_is_refused(api, protected, wait):
    response = submit(api, resized_jpeg("coffee"), wait=wait)
    assert response.status_code == 400 and "wait" in response.json()["fields"]
    assert Check.objects.count() == 0


def test_bad_check_upload_is_refused_and_stores_nothing(api, protected, media_files):
    before = media_files()
    response = submit(api, truncated_jpeg(), "cut.jpg")
    assert response.status_code == 400 and response.json()["error"] == "corrupt_image"
    assert Check.objects.count() == 0 and media_files() == before


def test_check_limited_to_a_collection(api, org, protected):
    other = CollectionFactory(organisation=org, slug="empty")
    body = submit(api, resized_jpeg("chelsea"), wait=5, collection=other.pk).json()
    assert body["result"]["verdict"] == "none"
    foreign = CollectionFactory()
    response = submit(api, resized_jpeg("chelsea"), collection=foreign.pk)
    assert response.status_code == 400


def test_check_run_is_idempotent(api, protected):
    check_id = submit(api, resized_jpeg("coffee"), wait=5).json()["id"]
    services.check_run(check_id=check_id)  # a redelivered task
    assert Match.objects.filter(source_check_id=check_id).count() == 1
    assert len(mail.outbox) == 1


@pytest.mark.django_db(transaction=False)  # on_commit never fires: the check stays queued
def test_corrupt_stored_check_fails_once_with_reason(api, settings):
    from pathlib import Path

    from matching.core.errors import ImageError
    from workers.tasks import run_check

    response = submit(api, resized_jpeg("coffee"))
    check = Check.objects.get(pk=response.json()["id"])
    Path(settings.MEDIA_ROOT, check.file.name).write_bytes(b"garbage that is not an image")
    with pytest.raises(ImageError):
        services.check_run(check_id=check.pk)
    check.refresh_from_db()
    assert check.status == "failed" and check.failure_code == "unsupported_format" and check.failure_reason
    # the task swallows permanent errors (no retry) and a second delivery does nothing
    run_check.apply(args=[check.pk]).get()
    check.refresh_from_db()
    assert check.status == "failed"


def test_matches_list_filters(api, org, protected):
    submit(api, resized_jpeg("coffee"), wait=5)
    submit(api, photo_png("rocket"), "r.png", wait=5)
    assert api.get("/api/v1/matches/").json()["count"] == 2
    exact = api.get("/api/v1/matches/?verdict=exact").json()
    assert exact["count"] == 1 and exact["results"][0]["key"] == "rocket.png"
    assert api.get(f"/api/v1/matches/?collection={protected.pk}").json()["count"] == 2
    other = CollectionFactory(organisation=org, slug="none")
    assert api.get(f"/api/v1/matches/?collection={other.pk}").json()["count"] == 0
    assert api.get("/api/v1/matches/?created_after=2999-01-01T00:00:00Z").json()["count"] == 0
    assert api.get("/api/v1/matches/?verdict=bogus").status_code == 400


@pytest.mark.parametrize("query", ["check=-1.9855281336896088e%2B217", "collection=1e20", "check=99999999999999999999",
                                   "check=1.5", "collection=0"])
def test_match_id_filters_out_of_range_are_a_400(api, query):
    # A fuzz finding (tests/test_api_fuzz.py): the decimal overflowed SQLite's integer, a 500.
    response = api.get(f"/api/v1/matches/?{query}")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == [query.split("=")[0]]


def test_deleted_image_is_never_matched(api, protected):
    image = ProtectedImage.objects.get(key="coffee.png")
    api.delete(f"/api/v1/images/{image.pk}/")
    body = submit(api, resized_jpeg("coffee"), wait=5).json()
    assert body["result"]["verdict"] == "none"


@pytest.mark.django_db(transaction=False)
def test_submit_enqueues_matching_only_on_commit(org, django_capture_on_commit_callbacks):
    from matching.core.loading import load_image

    data = resized_jpeg("coffee")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        check = services.check_submit(organisation=org, data=data, loaded=load_image(data), filename="s.jpg")
        assert Check.objects.get(pk=check.pk).status == "queued"
    assert len(callbacks) == 1  # nothing runs before commit; exactly one task after
    callbacks[0]()
    assert Check.objects.get(pk=check.pk).status == "done"


PASTE_BOX = [[362, 210], [464, 210], [464, 312], [362, 312]]


@pytest.fixture
def pasted_logo(api, org):  # type: ignore[no-untyped-def]
    """A brand mark drawn here (no model saw it) and two photos protected; the suspect: the mark at
    a fifth of the width of a photo nobody protected, saved as a JPEG (a partial copy: only the
    tile pass finds it)."""
    from PIL import Image

    logo = drawn_logo()
    collection = CollectionFactory(organisation=org, slug="brand", alert_emails="legal@acme.test")
    for key, image in (("brand-mark.png", logo), ("coffee.png", photo("coffee")), ("rocket.png", photo("rocket"))):
        response = api.post("/api/v1/images/", {"collection": collection.pk, "key": key,
                                                "file": SimpleUploadedFile(key, encode(image))})
        assert response.status_code == 201
    suspect = photo("astronaut").copy()
    suspect.paste(logo.resize((102, 102), Image.Resampling.BILINEAR), (362, 210))
    return encode(suspect, "JPEG", quality=90), suspect.size


def test_logo_pasted_into_a_photo_is_found_boxed_and_evidenced(api, pasted_logo):
    from bench.metrics import polygon_iou

    data, size = pasted_logo
    body = submit(api, data, wait=20).json()  # in-process tasks: the partial-copy pass ran before the reply
    assert body["status"] == "done" and body["result"]["verdict"] == "modified_copy", body["result"]
    assert body["partial_search"] == "done" and body["completed"]
    match = body["matches"][0]
    assert match["key"] == "brand-mark.png" and match["verdict"] == "modified_copy"
    assert polygon_iou(match["region"]["query"], PASTE_BOX, size) >= 0.5
    evidence = api.get(match["evidence_url"])
    assert evidence.status_code == 200 and evidence["Content-Type"] == "image/png"


def test_a_check_answers_before_the_partial_copy_pass_which_then_adds_its_match(api, pasted_logo, monkeypatch):
    from workers import tasks

    from matching.core.matcher import Matcher

    queued: list[int] = []
    monkeypatch.setattr(tasks.run_check_partial, "delay", queued.append)  # a worker that has not got to it yet
    modes: list[str] = []
    real_match = Matcher.match

    def match(self, loaded, **kwargs):  # type: ignore[no-untyped-def]
        modes.append(kwargs.get("partial", "auto"))
        return real_match(self, loaded, **kwargs)

    monkeypatch.setattr(Matcher, "match", match)
    data, size = pasted_logo
    body = submit(api, data, wait=20).json()
    assert modes == ["never"]  # the answer leaves weak candidates' mark searches to the task (matcher.py)
    # The answer: no whole-frame copy, the partial-copy pass still to come.
    assert body["status"] == "done" and body["finished"] and body["completed"] is None
    assert body["partial_search"] == "pending" and body["result"]["partial_search"] == "pending"
    assert body["result"]["verdict"] == "none" and body["matches"] == [] and len(mail.outbox) == 0
    assert "cnn_tiles_ms" not in body["result"]["timings_ms"] and "cnn_ms" in body["result"]["timings_ms"]
    assert queued == [body["id"]]
    assert api.get(body["url"]).json()["partial_search"] == "pending"

    services.check_partial_run(check_id=body["id"])
    assert modes == ["never", "auto"]
    later = api.get(body["url"]).json()
    assert later["partial_search"] == "done" and later["completed"] and later["status"] == "done"
    assert later["result"]["verdict"] == "modified_copy" and later["result"]["partial_search"] == "done"
    assert "cnn_tiles_ms" in later["result"]["timings_ms"]
    assert later["result"]["answer_timings_ms"] == body["result"]["timings_ms"]  # the first answer's, kept
    assert [m["key"] for m in later["matches"]] == ["brand-mark.png"] and later["matches"][0]["evidence_url"]
    assert len(mail.outbox) == 1 and "brand-mark.png" in mail.outbox[0].body  # alerted like any match

    services.check_partial_run(check_id=body["id"])  # a redelivered task does nothing
    assert Match.objects.filter(source_check_id=body["id"]).count() == 1 and len(mail.outbox) == 1


def test_a_whole_frame_copy_skips_the_partial_copy_pass(api, protected, monkeypatch):
    from workers import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.run_check_partial, "delay", queued.append)
    body = submit(api, resized_jpeg("chelsea", 0.5, 60), wait=5).json()
    assert body["result"]["match"] and body["partial_search"] == "skipped" and body["completed"]
    assert queued == []
    assert services.check_partial_run(check_id=body["id"]).partial_search == "skipped"  # not pending: no work


@pytest.mark.parametrize(("mode", "state", "verdict"), [("inline", "done", "modified_copy"),
                                                         ("off", "skipped", "none")])
def test_partial_search_inline_or_off(api, pasted_logo, settings, monkeypatch, mode, state, verdict):
    from workers import tasks

    settings.IMGPROTECT_PARTIAL_SEARCH = mode
    queued: list[int] = []
    monkeypatch.setattr(tasks.run_check_partial, "delay", queued.append)
    body = submit(api, pasted_logo[0], wait=20).json()
    assert body["partial_search"] == state and body["result"]["verdict"] == verdict and body["completed"]
    assert queued == []


def test_wait_complete_is_not_satisfied_by_the_answer_alone(api, pasted_logo, monkeypatch):
    from workers import tasks

    monkeypatch.setattr(tasks.run_check_partial, "delay", lambda check_id: None)  # no worker takes the pass
    answered = api.post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("s.jpg", pasted_logo[0])},
                        format="multipart")
    assert answered.status_code == 200 and answered.json()["partial_search"] == "pending"
    waiting = api.post("/api/v1/checks/?wait=0.5&complete=true", {"file": SimpleUploadedFile("s.jpg", pasted_logo[0])},
                       format="multipart")
    assert waiting.status_code == 202 and waiting.json()["partial_search"] == "pending"
    assert waiting.json()["status"] == "done"  # answered, but not complete: the wait ran out


def test_wait_complete_waits_for_the_partial_copy_pass_and_bad_values_are_refused(api, pasted_logo):
    response = api.post("/api/v1/checks/?wait=20&complete=true", {"file": SimpleUploadedFile("s.jpg", pasted_logo[0])},
                        format="multipart")
    assert response.status_code == 200 and response.json()["partial_search"] == "done"
    response = api.post("/api/v1/checks/?wait=5&complete=maybe", {"file": SimpleUploadedFile("s.jpg", pasted_logo[0])},
                        format="multipart")
    assert response.status_code == 400 and "complete" in response.json()["fields"]
    assert Check.objects.count() == 1


def test_finding_01_check_files_and_evidence_are_typed_and_sandboxed(api, protected):
    from tests.test_admin import assert_served_as_png

    body = submit(api, photo_png("rocket"), "poc.html", wait=5).json()
    check = Check.objects.get(pk=body["id"])
    assert check.original_name == "poc.html" and check.file.name.endswith(".png")
    evidence = api.get(body["matches"][0]["evidence_url"])
    assert_served_as_png(evidence)


def test_finding_11_an_image_deleted_during_matching_does_not_leave_the_check_running(api, org, protected,
                                                                                      monkeypatch):
    """The copy is protected twice; one of the two is deleted between the search and the write."""
    from matching import engine

    other = CollectionFactory(organisation=org, slug="archive")
    assert api.post("/api/v1/images/", {"collection": other.pk, "key": "coffee again.png",
                                        "file": SimpleUploadedFile("c.png", photo_png("coffee"))}).status_code == 201
    doomed = ProtectedImage.objects.get(collection=protected, key="coffee.png")
    search = engine.find_candidates

    def search_then_delete(**kwargs):  # type: ignore[no-untyped-def]
        found = search(**kwargs)
        assert doomed.pk in [c.image.pk for c in found[0] if c.decision.is_match]
        ProtectedImage.objects.filter(pk=doomed.pk).delete()  # another request deletes it meanwhile
        return found

    monkeypatch.setattr(services, "find_candidates", search_then_delete)
    check = submit(api, photo_png("coffee"), "copy.png").json()
    check = Check.objects.get(pk=check["id"])
    assert check.status == "done" and check.finished is not None
    assert [m.protected_image.key for m in check.matches.all()] == ["coffee again.png"]
    assert doomed.pk not in [c["image_id"] for c in check.result["candidates"]]
    assert check.result["verdict"] == "exact"
