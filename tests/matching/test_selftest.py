"""The protection self-test (matching/selftest.py) and the protectability flags (matching/protection.py),
through the images API on the embedded default: real engine, real index, no mocks."""
from __future__ import annotations

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from catalog.models import ProtectedImage
from catalog.services import index_generation_bump
from matching.models import Check, Match, SelfTest
from tests.conftest import client_for
from tests.factories import CollectionFactory, OrganisationFactory
from tests.images import drawn_logo, encode, photo

# Transactional, like production: indexing and the self-test run when their request commits.
pytestmark = pytest.mark.django_db(transaction=True)


def upload(api, collection, key: str, image: Image.Image, fmt: str = "PNG"):  # type: ignore[no-untyped-def]
    return api.post("/api/v1/images/", {"collection": collection.pk, "key": key,
                                        "file": SimpleUploadedFile(key, encode(image, fmt))})


@pytest.fixture
def photos(org, api):  # type: ignore[no-untyped-def]
    collection = CollectionFactory(organisation=org, slug="photos", alert_emails="legal@acme.test")
    ids = {}
    for name in ("astronaut", "coffee", "rocket"):
        response = upload(api, collection, f"{name}.png", photo(name))
        assert response.status_code == 201, response.content
        ids[name] = response.json()["id"]
    return collection, ids


def test_self_test_of_a_photo_finds_the_easy_edits_and_writes_nothing_else(api, photos):
    _collection, ids = photos
    response = api.post(f"/api/v1/images/{ids['astronaut']}/self-test/")
    assert response.status_code == 200, response.content  # eager: finished within the request
    body = response.json()
    assert body["status"] == "done" and body["image"] == ids["astronaut"]
    results = body["results"]
    assert results["kind"] == "photo"
    edits = {row["edit"]: row for row in results["edits"]}
    assert list(edits) == ["crop_60", "crop_40", "rotate_7", "rotate_90", "mirror", "recolour", "caption_bar",
                           "screenshot", "collage"]  # a photo gets no mark edit
    for name in ("crop_60", "mirror", "rotate_90"):
        assert edits[name]["found"] is True, edits[name]
        assert edits[name]["rank"] == 1
        assert edits[name]["verdict"] in ("near_duplicate", "modified_copy"), edits[name]
    assert results["found"] == sum(row["found"] for row in results["edits"])
    # Matching only: no check, no match report, no alert.
    assert Check.objects.count() == 0 and Match.objects.count() == 0
    assert mail.outbox == []
    # The GET answers the same result.
    again = api.get(f"/api/v1/images/{ids['astronaut']}/self-test/")
    assert again.status_code == 200 and again.json() == body
    # Deleting the image deletes its self-tests.
    assert api.delete(f"/api/v1/images/{ids['astronaut']}/").status_code == 204
    assert SelfTest.objects.count() == 0


def test_self_test_of_a_mark_composites_it_into_a_photo(api, org):
    collection = CollectionFactory(organisation=org, slug="brand")
    image_id = upload(api, collection, "mark.png", drawn_logo()).json()["id"]
    first = api.post(f"/api/v1/images/{image_id}/self-test/").json()
    assert first["results"]["kind"] == "mark"
    assert [row["edit"] for row in first["results"]["edits"]][-1] == "mark_in_photo"
    # The edits are deterministic: on an unchanged index the result is returned again, not recomputed.
    assert api.post(f"/api/v1/images/{image_id}/self-test/").json()["id"] == first["id"]
    index_generation_bump(organisation_id=org.pk)  # the index changed: the test runs again
    second = api.post(f"/api/v1/images/{image_id}/self-test/").json()
    assert second["id"] != first["id"] and second["status"] == "done"
    assert SelfTest.objects.filter(image_id=image_id).count() == 2


def test_self_test_is_tenant_scoped_role_checked_and_refused_before_indexing(api, org, photos):
    _collection, ids = photos
    other = client_for(OrganisationFactory(slug="other"))
    assert other.post(f"/api/v1/images/{ids['coffee']}/self-test/").status_code == 404
    assert other.get(f"/api/v1/images/{ids['coffee']}/self-test/").status_code == 404
    assert api.get(f"/api/v1/images/{ids['coffee']}/self-test/").json()["error"] == "not_found"  # none yet
    assert client_for(org, "viewer").post(f"/api/v1/images/{ids['coffee']}/self-test/").status_code == 403
    ProtectedImage.objects.filter(pk=ids["coffee"]).update(status=ProtectedImage.Status.PENDING)
    refused = api.post(f"/api/v1/images/{ids['coffee']}/self-test/")
    assert refused.status_code == 409 and refused.json()["error"] == "not_indexed"
    assert SelfTest.objects.count() == 0


def test_self_test_is_in_the_schema():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    path = schema["paths"]["/api/v1/images/{id}/self-test/"]
    assert {"200", "404"} <= set(path["get"]["responses"])
    assert {"200", "202", "404", "409"} <= set(path["post"]["responses"])
    edit = schema["components"]["schemas"]["SelfTestEdit"]["properties"]
    assert {"edit", "found", "rank", "verdict", "score"} <= set(edit)
    flags = schema["components"]["schemas"]["ProtectedImage"]["properties"]
    assert "protection_flags" in flags and "keypoint_count" in flags


# -- protectability flags ----------------------------------------------------------------------

def codes(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [flag["code"] for flag in body["protection_flags"]]


def test_a_normal_photo_is_not_flagged(api, photos):
    _collection, ids = photos
    body = api.get(f"/api/v1/images/{ids['rocket']}/").json()
    assert body["protection_flags"] == [] and body["keypoint_count"] >= 100


def test_a_tiny_image_is_flagged_at_upload(api, org):
    collection = CollectionFactory(organisation=org)
    response = upload(api, collection, "tiny.png", photo("chelsea").resize((90, 60)))
    assert response.status_code == 201
    assert "tiny" in codes(response.json())
    assert "90x60" in response.json()["protection_flags"][0]["reason"]


def test_a_flat_image_is_flagged(api, org):
    collection = CollectionFactory(organisation=org)
    response = upload(api, collection, "flat.png", Image.new("RGB", (400, 300), (120, 130, 140)))
    assert response.status_code == 201
    assert codes(response.json()) == ["flat", "few_features"]


def test_a_near_duplicate_is_flagged_with_the_other_images_id(api, org, photos):
    _collection, ids = photos
    other = CollectionFactory(organisation=org, slug="press")
    copy = photo("coffee").resize((480, 320))
    response = upload(api, other, "coffee-small.jpg", copy, "JPEG")
    assert response.status_code == 201
    flags = response.json()["protection_flags"]
    assert [f["code"] for f in flags] == ["near_duplicate"]
    assert flags[0]["image_id"] == ids["coffee"] and "coffee.png" in flags[0]["reason"]
    # Another organisation's copy of the same picture is not its near-duplicate.
    outsider = OrganisationFactory(slug="other")
    theirs = upload(client_for(outsider), CollectionFactory(organisation=outsider), "coffee.png", photo("coffee"))
    assert theirs.json()["protection_flags"] == []
    # Once the other picture is deleted, the flag no longer points at it.
    assert api.delete(f"/api/v1/images/{ids['coffee']}/").status_code == 204
    assert api.get(f"/api/v1/images/{response.json()['id']}/").json()["protection_flags"] == []


def test_the_chart_colours_each_outcome_and_escapes_nothing_itself():
    from matching.portal.presentation import self_test_chart

    chart = self_test_chart({"kind": "photo", "found": 1, "total": 4, "edits": [
        {"label": "Mirrored", "found": True, "rank": 1, "verdict": "modified_copy", "score": 0.99},
        {"label": "Recoloured", "found": False, "rank": 2, "verdict": "similar", "score": 0.5},
        {"label": "Crop", "found": False, "rank": 3, "verdict": "none", "score": 0.2},
        {"label": "<b>Collage</b>", "found": False, "rank": None, "verdict": "bogus", "score": float("nan")},
    ]})
    rows = chart["rows"]
    assert [r["css"] for r in rows] == ["st-mod", "st-similar", "st-weak", "st-miss"]
    assert [r["words"] for r in rows] == ["found #1 · modified copy", "not matched · #2 similar",
                                         "not matched · #3 no verdict", "not found"]
    assert rows[0]["width"] > rows[1]["width"] > rows[2]["width"] > rows[3]["width"] == 3  # NaN: the stub
    assert rows[3]["label"] == "<b>Collage</b>"  # escaped by the template, like every value
    assert chart["height"] == 16 + 4 * 26 and rows[1]["y"] == rows[0]["y"] + 26
