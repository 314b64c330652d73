"""The images and collections API, including every kind of bad input."""
from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services
from catalog.models import Collection, ProtectedImage
from tests.conftest import client_for
from tests.factories import CollectionFactory
from tests.images import encode, photo, photo_png, png_declaring, truncated_jpeg

pytestmark = pytest.mark.django_db


def upload(client, collection_id, data: bytes, name: str = "image.png", **extra):  # type: ignore[no-untyped-def]
    payload = {"collection": collection_id, "file": SimpleUploadedFile(name, data), **extra}
    return client.post("/api/v1/images/", payload, format="multipart")


@pytest.fixture
def collection(org):  # type: ignore[no-untyped-def]
    return CollectionFactory(organisation=org, slug="logos", name="Logos")


def test_upload_stores_and_indexes_on_commit(api, collection, django_capture_on_commit_callbacks, media_files,
                                             settings):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = upload(api, collection.pk, photo_png("coffee"), "coffee.png")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["key"] == "coffee.png" and body["status"] == "pending"
    # Indexing is enqueued once, after commit; indexing then queues the retroactive re-check, after its own commit.
    assert len(callbacks) == 2
    image = ProtectedImage.objects.get(pk=body["id"])
    assert image.status == "indexed"
    assert len(image.signals["phash"]) == 16
    assert (image.width, image.height) == photo("coffee").size
    assert image.pdq and image.features  # PDQ and local features for verification are stored too
    stored = [p.relative_to(settings.MEDIA_ROOT).parts[0] for p in media_files()]
    assert sorted(stored) == ["features", "protected"]
    fetched = api.get(f"/api/v1/images/{image.pk}/file/")
    assert fetched.status_code == 200
    assert b"".join(fetched.streaming_content) == photo_png("coffee")


def _bad_inputs():  # type: ignore[no-untyped-def]
    return [
        ("not_image", b"hello, I am text and not an image" * 10, "fake.jpg", "unsupported_format"),
        ("truncated", truncated_jpeg(), "cut.jpg", "corrupt_image"),
        ("empty", b"", "empty.png", None),  # DRF itself refuses an empty file
        ("bomb", png_declaring(30000, 30000), "bomb.png", "too_many_pixels"),
    ]


@pytest.mark.parametrize("label,data,name,code", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_bad_files_are_refused_and_leave_nothing(api, collection, media_files, label, data, name, code):
    response = upload(api, collection.pk, data, name)
    assert response.status_code == 400
    body = response.json()
    assert body["detail"]
    if code:
        assert body["error"] == code
    assert ProtectedImage.objects.count() == 0
    assert media_files() == []


def test_file_over_the_size_limit_is_refused(api, collection, media_files, settings):
    settings.IMGPROTECT_MAX_UPLOAD_BYTES = 2048
    response = upload(api, collection.pk, photo_png("astronaut"), "big.png")
    assert response.status_code == 400
    assert response.json()["error"] == "file_too_large"
    assert ProtectedImage.objects.count() == 0 and media_files() == []


def test_missing_file_field(api, collection):
    response = api.post("/api/v1/images/", {"collection": collection.pk}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()["fields"]


def test_unknown_and_foreign_collection_ids_are_refused_alike(api, org, media_files):
    other = CollectionFactory()  # another organisation's collection
    for collection_id in (other.pk, 999999):
        response = upload(api, collection_id, photo_png("coffee"))
        assert response.status_code == 400
        assert response.json()["fields"]["collection"] == ["No such collection in your organisation."]
    assert ProtectedImage.objects.count() == 0 and media_files() == []


def test_duplicate_key_and_duplicate_picture_conflict(api, collection, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert upload(api, collection.pk, photo_png("coffee"), "a.png").status_code == 201
    again = upload(api, collection.pk, photo_png("chelsea"), "a.png")
    assert again.status_code == 409 and again.json()["error"] == "duplicate_key"
    same_pixels = upload(api, collection.pk, encode(photo("coffee"), "BMP"), "b.bmp")
    assert same_pixels.status_code == 409 and same_pixels.json()["error"] == "duplicate_image"
    assert ProtectedImage.objects.count() == 1


def test_wrong_and_revoked_keys_are_rejected(org, collection):
    from rest_framework.test import APIClient

    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Api-Key ipk_nope_nope")
    response = wrong.get("/api/v1/collections/")
    assert response.status_code == 401 and response.json()["detail"] == "Invalid API key."

    issued = services.api_key_create(organisation=org, name="old")
    services.api_key_revoke(key=issued.key)
    revoked = APIClient()
    revoked.credentials(HTTP_AUTHORIZATION=f"Api-Key {issued.secret}")
    response = revoked.get("/api/v1/collections/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]

    anonymous = APIClient().get("/api/v1/collections/")
    assert anonymous.status_code == 401


def test_viewer_can_read_but_not_upload_or_delete(org, collection, django_capture_on_commit_callbacks, media_files):
    admin = client_for(org, "admin")
    with django_capture_on_commit_callbacks(execute=True):
        image_id = upload(admin, collection.pk, photo_png("coffee")).json()["id"]
    viewer = client_for(org, "viewer")
    assert viewer.get("/api/v1/images/").json()["count"] == 1
    response = upload(viewer, collection.pk, photo_png("chelsea"), "c.png")
    assert response.status_code == 403 and response.json()["error"] == "permission_denied"
    assert viewer.delete(f"/api/v1/images/{image_id}/").status_code == 403
    assert viewer.post("/api/v1/collections/", {"name": "x"}).status_code == 403
    assert ProtectedImage.objects.count() == 1 and len(media_files()) == 2  # the image and its features


def test_member_uploads_but_cannot_manage_collections(org, collection, django_capture_on_commit_callbacks):
    member = client_for(org, "member")
    with django_capture_on_commit_callbacks(execute=True):
        assert upload(member, collection.pk, photo_png("coffee")).status_code == 201
    assert member.post("/api/v1/collections/", {"name": "New"}).status_code == 403
    assert member.delete(f"/api/v1/collections/{collection.pk}/").status_code == 403


def test_collection_crud(api, org):
    created = api.post("/api/v1/collections/", {"name": "Product shots", "alert_emails": "a@x.com, b@y.org"})
    assert created.status_code == 201, created.json()
    cid = created.json()["id"]
    assert created.json()["slug"] == "product-shots"
    assert api.get("/api/v1/collections/").json()["count"] == 1
    patched = api.patch(f"/api/v1/collections/{cid}/", {"description": "2026 catalogue"}, format="json")
    assert patched.status_code == 200 and patched.json()["description"] == "2026 catalogue"
    bad = api.patch(f"/api/v1/collections/{cid}/", {"alert_emails": "not-an-address"}, format="json")
    assert bad.status_code == 400 and "alert_emails" in bad.json()["fields"]
    assert api.delete(f"/api/v1/collections/{cid}/").status_code == 204
    assert not Collection.objects.filter(pk=cid).exists()


@pytest.mark.parametrize("body,field,message", [
    # Fuzz findings (tests/test_api_fuzz.py): DRF coerced the number to "0" and stripped the spaces
    # before counting, so both were stored though the schema refuses them.
    ({"name": "Logos", "description": 0}, "description", "Must be a string."),
    ({"name": "Logos", "slug": " logos" + " " * 100}, "slug", "Ensure this field has no more than 100 characters."),
    ({"name": "Logos", "phash_max_distance": "8"}, "phash_max_distance", "Must be an integer."),
    ({"name": "Logos", "phash_max_distance": True}, "phash_max_distance", "Must be an integer."),
])
def test_a_json_body_is_read_as_the_schema_types_it(api, body, field, message):
    response = api.post("/api/v1/collections/", body, format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {field: [message]}
    assert not Collection.objects.exists()


def test_delete_removes_file_and_index_entry(api, collection, django_capture_on_commit_callbacks, media_files):
    from matching.index_registry import registry

    with django_capture_on_commit_callbacks(execute=True):
        image_id = upload(api, collection.pk, photo_png("coffee")).json()["id"]
    assert image_id in registry.get(collection.organisation_id).phash
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/v1/images/{image_id}/").status_code == 204
    assert media_files() == []
    indexes = registry.get(collection.organisation_id)
    assert image_id not in indexes.phash and image_id not in indexes.pdq
    assert api.get(f"/api/v1/images/{image_id}/").status_code == 404


def test_image_list_filters_and_paginates(api, collection, django_capture_on_commit_callbacks):
    other = CollectionFactory(organisation=collection.organisation, slug="other")
    with django_capture_on_commit_callbacks(execute=True):
        for name in ("coffee", "chelsea", "rocket"):
            upload(api, collection.pk, photo_png(name), f"{name}.png")
        upload(api, other.pk, photo_png("astronaut"), "astronaut.png")
    everything = api.get("/api/v1/images/").json()
    assert everything["count"] == 4
    assert api.get(f"/api/v1/images/?collection={other.pk}").json()["count"] == 1
    assert api.get("/api/v1/images/?key=chel").json()["results"][0]["key"] == "chelsea.png"
    assert api.get("/api/v1/images/?status=failed").json()["count"] == 0
    first = api.get("/api/v1/images/?page_size=3").json()
    assert len(first["results"]) == 3 and first["next"]
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    seen = {r["id"] for r in first["results"]} | {r["id"] for r in second["results"]}
    assert len(seen) == 4


def test_openapi_schema_and_docs_page(api, client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/collections/", "/api/v1/images/", "/api/v1/checks/", "/api/v1/matches/",
                 "/api/v1/organisation/"):
        assert path in paths
    assert "ApiKeyAuth" in schema.json()["components"]["securitySchemes"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    assert b"cdn" not in docs.content.lower()


def test_finding_01_image_file_is_typed_from_the_decoded_format_and_sandboxed(api, collection):
    from tests.test_admin import assert_served_as_png, png_with_script

    body = upload(api, collection.pk, png_with_script(), "poc.html").json()
    image = ProtectedImage.objects.get(pk=body["id"])
    assert body["key"] == "poc.html" and image.file.name.endswith(".png")
    served = api.get(f"/api/v1/images/{image.pk}/file/")
    assert_served_as_png(served)
    assert b"".join(served.streaming_content) == png_with_script()


@pytest.mark.parametrize("name", ["Logos\nBcc: victim@example.com", "Lo\rgos", "Tab\there", "nul\x00"])
def test_finding_14_the_api_refuses_a_name_with_a_line_break(api, org, name):
    refused = api.post("/api/v1/collections/", {"name": name}, format="json")
    assert refused.status_code == 400 and "name" in refused.json()["fields"], refused.json()
    assert not Collection.objects.exists()
    cid = api.post("/api/v1/collections/", {"name": "Logos"}, format="json").json()["id"]
    patched = api.patch(f"/api/v1/collections/{cid}/", {"name": name}, format="json")
    assert patched.status_code == 400 and "name" in patched.json()["fields"]
    assert Collection.objects.get(pk=cid).name == "Logos"
