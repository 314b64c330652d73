"""Another organisation's objects answer 404 on every endpoint and never show in lists."""
from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import Organisation
from tests.conftest import client_for
from tests.factories import CollectionFactory, OrganisationFactory
from tests.images import photo_png, resized_jpeg

# Transactional, like production: tasks enqueued on commit run when the request commits.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def first():  # type: ignore[no-untyped-def]
    org = OrganisationFactory(slug="first")
    client = client_for(org, "owner")
    collection = CollectionFactory(organisation=org)
    image = client.post("/api/v1/images/", {"collection": collection.pk,
                                            "file": SimpleUploadedFile("c.png", photo_png("coffee"))}).json()
    check = client.post("/api/v1/checks/?wait=5",
                        {"file": SimpleUploadedFile("s.jpg", resized_jpeg("coffee"))}).json()
    assert check["matches"], check
    return {"collection": collection.pk, "image": image["id"], "check": check["id"],
            "match": check["matches"][0]["id"]}


@pytest.fixture
def intruder():  # type: ignore[no-untyped-def]
    return client_for(OrganisationFactory(slug="second"), "owner")


DETAIL_URLS = [
    ("get", "/api/v1/collections/{collection}/"),
    ("patch", "/api/v1/collections/{collection}/"),
    ("put", "/api/v1/collections/{collection}/"),
    ("delete", "/api/v1/collections/{collection}/"),
    ("get", "/api/v1/images/{image}/"),
    ("get", "/api/v1/images/{image}/file/"),
    ("delete", "/api/v1/images/{image}/"),
    ("get", "/api/v1/checks/{check}/"),
    ("get", "/api/v1/matches/{match}/"),
]
LIST_URLS = ["/api/v1/collections/", "/api/v1/images/", "/api/v1/checks/", "/api/v1/matches/"]


@pytest.mark.parametrize("method,url", DETAIL_URLS)
def test_foreign_ids_answer_404(first, intruder, method, url):
    response = getattr(intruder, method)(url.format(**first), {"name": "stolen"}, format="json")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "Not found."}


@pytest.mark.parametrize("url", LIST_URLS)
def test_lists_never_show_foreign_objects(first, intruder, url):
    assert intruder.get(url).json()["count"] == 0
    owner_view = client_for(Organisation.objects.get(slug="first"), "viewer").get(url).json()
    assert owner_view["count"] >= 1  # the objects exist; only the intruder cannot see them


def test_foreign_filters_show_nothing(first, intruder):
    # Refused as an unknown id would be (catalog/filters.py), so ids of other organisations cannot be probed.
    for url, noun in ((f"/api/v1/images/?collection={first['collection']}", "collection"),
                      (f"/api/v1/matches/?check={first['check']}", "check")):
        response = intruder.get(url)
        assert response.status_code == 400 and "results" not in response.json()
        assert response.json()["fields"] == {noun: [f"No such {noun} in your organisation."]}


def test_foreign_images_are_never_matched(first, intruder):
    body = intruder.post("/api/v1/checks/?wait=5",
                         {"file": SimpleUploadedFile("s.jpg", resized_jpeg("coffee"))}).json()
    assert body["result"]["candidates"] == [] and body["matches"] == []


def test_organisation_endpoint_is_the_callers(first, intruder):
    assert intruder.get("/api/v1/organisation/").json()["slug"] == "second"
