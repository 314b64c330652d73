"""The API's shared behaviour (imgprotect/api.py, imgprotect/urls.py): one JSON error shape for every
answer under /api/, strict paging and filters. Most cases are findings of tests/test_api_fuzz.py."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/images/1.5/", "/api/v1/matches/0.5/evidence/",
                                  "/api/v1/collections/-1.2e-207/", "/api/v1/no-such-route/"])
def test_a_url_no_route_matches_is_a_json_404(api, path):
    # Was Django's HTML 404 page: the router's ids exclude dots.
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": "Not found."}


def test_outside_the_api_a_missing_page_stays_html(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_an_unhandled_error_under_the_api_is_a_json_500(api, monkeypatch):
    from catalog import selectors

    def boom(**kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "collection_list", boom)
    api.raise_request_exception = False
    response = api.get("/api/v1/collections/")
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "detail": "Internal server error."}


@pytest.mark.parametrize("page_size", ["null", "0", "-3", "2.5", ""])
def test_a_page_size_that_is_not_a_positive_whole_number_is_refused(api, page_size):
    # Was ignored: the list came back paged by 50 as if page_size had not been sent.
    response = api.get(f"/api/v1/collections/?page_size={page_size}")
    assert response.status_code == 400
    assert response.json()["fields"] == {"page_size": ["Must be a whole number, 1 or more."]}


def test_page_size_is_capped_and_a_blank_page_is_not_page_one(api, org):
    from tests.factories import CollectionFactory

    CollectionFactory.create_batch(3, organisation=org)
    assert len(api.get("/api/v1/collections/?page_size=100000").json()["results"]) == 3
    assert len(api.get("/api/v1/collections/?page_size=2").json()["results"]) == 2
    response = api.get("/api/v1/collections/?page=")  # was read as page 1
    assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize("query", ["created_before=", "created_after=", "verdict=", "collection=", "check="])
def test_a_blank_typed_filter_is_refused_not_ignored(api, query):
    # Was ignored: ?created_before= listed every match.
    response = api.get(f"/api/v1/matches/?{query}")
    assert response.status_code == 400
    assert response.json()["fields"] == {query.rstrip("="): ["May not be blank."]}


def test_a_blank_text_filter_still_means_any(api):
    assert api.get("/api/v1/images/?key=").status_code == 200


def test_a_form_over_the_body_limit_is_a_json_413(api, settings):
    # Was Django's HTML "Bad Request (400)" page.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("/api/v1/checks/", {"collection": "1" * 5000}, format="multipart")
    assert response.status_code == 413
    assert response.json() == {"error": "request_too_large", "detail": "The request body is too large."}


@pytest.mark.parametrize("path", ["/api/v1/matches/", "/api/v1/images/"])
def test_date_filters_read_any_offset_in_utc_and_refuse_what_falls_outside_the_calendar(api, path):
    # Found by tests/test_api_fuzz.py: PostgreSQL refuses an offset past +-15:59, so "+23:59" was a 500.
    assert api.get(path, {"created_before": "2026-01-01T00:00:00+23:59"}).status_code == 200
    for value in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"):
        response = api.get(path, {"created_after": value})
        assert response.status_code == 400
        assert response.json()["fields"]["created_after"] == [
            "Out of range: the date-time must fall within years 1 to 9999 in UTC."]


@pytest.mark.parametrize("path, name", [("/api/v1/matches/", "found_retroactively"), ("/api/v1/watches/", "enabled")])
def test_a_yes_no_filter_takes_true_or_false_only(api, path, name):
    # Found by tests/test_api_fuzz.py: django-filter's BooleanFilter read "null" as no filter (every row).
    assert api.get(path, {name: "true"}).status_code == 200 and api.get(path, {name: "false"}).status_code == 200
    for value in ("null", "maybe", "1"):
        response = api.get(path, {name: value})
        assert response.status_code == 400 and name in response.json()["fields"], value
