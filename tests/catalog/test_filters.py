"""Ids in API query strings and paths (catalog/filters.py), on every list endpoint."""
from __future__ import annotations

import pytest

from tests.conftest import client_for
from tests.factories import CollectionFactory, OrganisationFactory

pytestmark = pytest.mark.django_db

LISTS = ["images", "checks", "bulk-jobs", "matches"]
BAD_IDS = ["1e20", "9223372036854775808", "99999999999999999999999", "-1", "0", "abc", "1.5", "١٢"]


@pytest.fixture
def foreign_collection(db):  # type: ignore[no-untyped-def]
    return CollectionFactory(organisation=OrganisationFactory(slug="rival"))


@pytest.mark.parametrize("endpoint", LISTS)
def test_finding_10_foreign_and_unknown_collection_ids_answer_alike(api, org, foreign_collection, endpoint):
    own = CollectionFactory(organisation=org)
    assert api.get(f"/api/v1/{endpoint}/?collection={own.pk}").status_code == 200
    foreign = api.get(f"/api/v1/{endpoint}/?collection={foreign_collection.pk}")
    unknown = api.get(f"/api/v1/{endpoint}/?collection={foreign_collection.pk + 1000}")
    assert foreign.status_code == unknown.status_code == 400
    assert foreign.json() == unknown.json() == {
        "error": "invalid", "detail": "collection: No such collection in your organisation.",
        "fields": {"collection": ["No such collection in your organisation."]}}


def test_finding_10_foreign_and_unknown_check_ids_answer_alike(api, org):
    from matching.models import Check

    rival = OrganisationFactory(slug="rival")
    foreign = Check.objects.create(organisation=rival, file="checks/x.png")
    mine = Check.objects.create(organisation=org, file="checks/y.png")
    assert api.get(f"/api/v1/matches/?check={mine.pk}").status_code == 200
    answers = [api.get(f"/api/v1/matches/?check={pk}") for pk in (foreign.pk, foreign.pk + 1000)]
    assert {a.status_code for a in answers} == {400}
    assert answers[0].json() == answers[1].json()


@pytest.mark.parametrize("value", BAD_IDS)
@pytest.mark.parametrize("url", [f"/api/v1/{e}/?collection={{}}" for e in LISTS] + ["/api/v1/matches/?check={}"])
def test_finding_15_malformed_or_out_of_range_filter_ids_answer_400(api, url, value):
    response = api.get(url.format(value))
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid" and set(body["fields"]) <= {"collection", "check"}


@pytest.mark.parametrize("value", [v for v in BAD_IDS if "." not in v])  # a dot ends the router's id pattern
@pytest.mark.parametrize("endpoint", [*LISTS, "collections"])
def test_finding_15_malformed_or_out_of_range_path_ids_answer_404_not_500(api, endpoint, value):
    response = api.get(f"/api/v1/{endpoint}/{value}/")
    assert response.status_code == 404, response.content
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("value", ["9223372036854775808", "-1", "1e20"])
@pytest.mark.parametrize("endpoint", ["images", "checks", "bulk-jobs"])
def test_out_of_range_collection_in_a_request_body_answers_400(api, endpoint, value):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.images import photo_png

    data = {"collection": value, "file": SimpleUploadedFile("a.png", photo_png("coffee")), "kind": "scan",
            "source": "/nowhere"}
    response = api.post(f"/api/v1/{endpoint}/", data, format="multipart" if endpoint != "bulk-jobs" else None)
    assert response.status_code == 400, response.content
    assert response.json()["fields"]["collection"]


def test_an_unauthenticated_bad_path_id_is_still_401(org):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/images/abc/").status_code in (401, 403)
    assert client_for(org).get("/api/v1/images/abc/").status_code == 404
