"""Every model has a working admin: list with thumbnails, filters and search, detail pages, file views."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import ApiKey, Collection, Membership, Organisation, ProtectedImage
from matching.models import Check, Match
from tests.conftest import client_for
from tests.images import encode, photo, photo_png, resized_jpeg

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


def png_with_script() -> bytes:
    """A valid PNG whose tEXt chunk is an HTML page: harmless as an image, stored XSS if served as HTML."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "<html><body><script>alert(document.domain)</script></body></html>")
    return encode(photo("rocket"), "PNG", pnginfo=info)


def assert_served_as_png(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert "default-src 'none'" in response["Content-Security-Policy"]


@pytest.mark.parametrize("kind", ["catalog", "check"])
def test_finding_01_admin_file_view_never_serves_html(client, org, kind):
    api = client_for(org, "owner")
    if kind == "catalog":
        collection = api.post("/api/v1/collections/", {"name": "Logos"}).json()
        response = api.post("/api/v1/images/", {"collection": collection["id"],
                                                "file": SimpleUploadedFile("poc.html", png_with_script())})
        row = ProtectedImage.objects.get(pk=response.json()["id"])
    else:
        response = api.post("/api/v1/checks/", {"file": SimpleUploadedFile("poc.html", png_with_script())})
        row = Check.objects.get(pk=response.json()["id"])
        assert row.original_name == "poc.html"  # the name is kept for display, not for storage
    assert response.status_code in (201, 202), response.json()
    assert row.file.name.endswith(".png"), row.file.name
    get_user_model().objects.create_user("root", password="pw-secret-123", is_staff=True, is_superuser=True)
    client.login(username="root", password="pw-secret-123")
    served = client.get(f"/admin/files/{kind}/{row.pk}/")
    assert_served_as_png(served)
    assert b"".join(served.streaming_content) == png_with_script()


@pytest.mark.parametrize("kind", ["catalog", "check"])
def test_finding_01_files_stored_under_an_html_name_are_still_served_as_images(client, populated, settings, kind):
    """Files stored before names came from the decoded format keep the uploader's extension."""
    from pathlib import Path

    row = ProtectedImage.objects.get() if kind == "catalog" else Check.objects.get()
    old = Path(settings.MEDIA_ROOT) / row.file.name
    renamed = old.with_suffix(".html")
    old.rename(renamed)
    type(row).objects.filter(pk=row.pk).update(file=str(renamed.relative_to(settings.MEDIA_ROOT)))
    client.login(username="staff", password="pw-secret-123")
    served = client.get(f"/admin/files/{kind}/{row.pk}/")
    assert served.status_code == 200
    assert served["Content-Type"] == ("image/png" if kind == "catalog" else "image/jpeg")
    assert served["X-Content-Type-Options"] == "nosniff" and "sandbox" in served["Content-Security-Policy"]


def test_finding_08_admin_file_view_needs_the_models_view_permission(client, populated):
    from django.contrib.auth.models import Permission

    staff = get_user_model().objects.create_user("helpdesk", password="pw-secret-123", is_staff=True)
    client.login(username="helpdesk", password="pw-secret-123")
    urls = {"catalog": f"/admin/files/catalog/{ProtectedImage.objects.get().pk}/",
            "check": f"/admin/files/check/{Check.objects.get().pk}/",
            "evidence": f"/admin/files/evidence/{Match.objects.get().pk}/"}
    for url in urls.values():
        assert client.get(url).status_code == 403
    perms = {"catalog": ("catalog", "view_protectedimage"), "check": ("matching", "change_check"),
             "evidence": ("matching", "view_match")}
    for kind, (app, codename) in perms.items():
        staff.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
        staff = get_user_model().objects.get(pk=staff.pk)  # a fresh permission cache
        assert client.get(urls[kind]).status_code == 200, kind
    # Evidence needs the match's permission, not the check's: a permission opens only its own model's files.
    staff.user_permissions.remove(Permission.objects.get(codename="view_match"))
    assert client.get(urls["evidence"]).status_code == 403
