"""Every model has a working admin: list with thumbnails, filters and search, detail pages, file views."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import ApiKey, Collection, Membership, Organisation, ProtectedImage
from matching.models import Check, Match
from tests.conftest import client_for
from tests.images import photo_png, resized_jpeg

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def populated(org):  # type: ignore[no-untyped-def]
    api = client_for(org, "owner")
    collection = api.post("/api/v1/collections/", {"name": "Logos"}).json()
    api.post("/api/v1/images/", {"collection": collection["id"], "file": SimpleUploadedFile("c.png", photo_png("coffee"))})
    api.post("/api/v1/checks/?wait=5", {"file": SimpleUploadedFile("s.jpg", resized_jpeg("coffee"))})
    user = get_user_model().objects.create_user("staff", password="pw-secret-123", is_staff=True, is_superuser=True)
    Membership.objects.create(user=user, organisation=org, role="owner")
    assert Match.objects.count() == 1


@pytest.mark.parametrize("model", [Organisation, Membership, ApiKey, Collection, ProtectedImage, Check, Match])
def test_changelist_search_and_change_pages(client, populated, model):
    client.login(username="staff", password="pw-secret-123")
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    listing = client.get(base)
    assert listing.status_code == 200
    assert client.get(base + "?q=coffee").status_code == 200
    obj = model.objects.first()
    assert client.get(f"{base}{obj.pk}/change/").status_code == 200


def test_thumbnails_are_served_to_staff_only(client, populated):
    image = ProtectedImage.objects.get()
    url = f"/admin/files/catalog/{image.pk}/"
    assert client.get(url).status_code == 302  # to the login page
    client.login(username="staff", password="pw-secret-123")
    listing = client.get("/admin/catalog/protectedimage/")
    assert url.encode() in listing.content
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == photo_png("coffee")
    check = Check.objects.get()
    assert client.get(f"/admin/files/check/{check.pk}/").status_code == 200
    assert client.get("/admin/files/other/1/").status_code == 404
