"""The OpenAPI schema's contract (imgprotect/schema.py and the views' annotations): every operation
documents its error answers in the API's error shape, its filters and id types, one body encoding,
and the limits the API enforces. Most cases are findings of tests/test_api_fuzz.py."""
from __future__ import annotations

import re

import pytest


@pytest.fixture(scope="module")
def schema(django_db_blocker):  # type: ignore[no-untyped-def]
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema):  # type: ignore[no-untyped-def]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def parameters(schema, label):  # type: ignore[no-untyped-def]
    method, path = label.split(" ")
    return {p["name"]: p["schema"] for p in schema["paths"][path][method.lower()].get("parameters", [])}


def test_every_operation_documents_its_error_answers_in_the_error_shape(schema):
    error = {"$ref": "#/components/schemas/Error"}
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"error", "detail"}
    for label, operation in operations(schema):
        responses = operation["responses"]
        expected = {"400", "401", "403", "429"}
        if "{id}" in label or "page" in parameters(schema, label):
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"413", "415"}
        assert expected <= set(responses), label
        for code in responses.keys() & {"400", "401", "403", "404", "409", "413", "415", "429"}:
            assert responses[code]["content"] == {"application/json": {"schema": error}}, (label, code)
        assert "Retry-After" in responses["429"]["headers"], label


def test_conflicts_are_documented_where_the_services_raise_them(schema):
    with_409 = {label for label, operation in operations(schema) if "409" in operation["responses"]}
    assert with_409 == {
        "POST /api/v1/collections/", "PUT /api/v1/collections/{id}/", "PATCH /api/v1/collections/{id}/",
        "POST /api/v1/images/", "POST /api/v1/bulk-jobs/{id}/cancel/", "POST /api/v1/bulk-jobs/{id}/resume/",
        "POST /api/v1/hash-lists/", "POST /api/v1/images/{id}/self-test/",
    }


def test_list_filters_and_integer_ids_are_documented(schema):
    # Were missing (filters) and typed string (ids): the views' get_queryset failed without a caller.
    assert {"collection", "status", "format", "key", "created_after", "created_before"} <= set(
        parameters(schema, "GET /api/v1/images/"))
    assert {"status", "collection"} <= set(parameters(schema, "GET /api/v1/checks/"))
    assert {"status", "kind", "collection"} <= set(parameters(schema, "GET /api/v1/bulk-jobs/"))
    for label, _ in operations(schema):
        if "{id}" in label:
            assert parameters(schema, label)["id"]["type"] == "integer", label


def test_match_filters_on_ids_are_bounded_integers(schema):
    # ?check=-1.98e217 was read as a decimal and overflowed the database's integer: a 500.
    match_filters = parameters(schema, "GET /api/v1/matches/")
    for name in ("check", "collection"):
        assert match_filters[name] == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}


def test_a_jobs_errors_document_no_filters_they_ignore(schema):
    assert set(parameters(schema, "GET /api/v1/bulk-jobs/{id}/errors/")) == {"id", "page", "page_size"}


def test_paging_and_waiting_document_their_bounds(schema, settings):
    listed = parameters(schema, "GET /api/v1/collections/")
    assert listed["page"]["minimum"] == 1 and listed["page_size"]["minimum"] == 1
    wait = parameters(schema, "POST /api/v1/checks/")["wait"]
    assert wait["minimum"] == 0 and wait["maximum"] == settings.IMGPROTECT_MAX_CHECK_WAIT_SECONDS


@pytest.mark.parametrize("label,media_type", [
    ("POST /api/v1/collections/", "application/json"),
    ("PATCH /api/v1/collections/{id}/", "application/json"),
    ("POST /api/v1/bulk-jobs/", "application/json"),
    ("POST /api/v1/images/", "multipart/form-data"),
    ("POST /api/v1/checks/", "multipart/form-data"),
])
def test_one_body_encoding_is_documented(schema, label, media_type):
    # A form-encoded file upload was documented (it cannot carry the file), and forms' "empty means
    # omitted" reading made schema-invalid bodies valid.
    method, path = label.split(" ")
    assert list(schema["paths"][path][method.lower()]["requestBody"]["content"]) == [media_type]


def test_text_that_is_stripped_documents_what_it_accepts(schema):
    # "  " as an image key passed minLength 1 but was refused as blank once stripped.
    components = schema["components"]["schemas"]
    assert components["ImageUploadRequest"]["properties"]["key"]["pattern"] == r"\S"
    # a name is also single-line (finding 14): no control character between its first and last visible one
    name = re.compile(components["CollectionRequest"]["properties"]["name"]["pattern"])
    assert name.search(" Logos ") and not name.search("   ") and not name.search("Lo\ngos")
    assert components["CollectionRequest"]["properties"]["slug"]["pattern"] == r"^\s*[-a-zA-Z0-9_]+\s*$"
    assert "pattern" not in components["CollectionRequest"]["properties"]["description"]
