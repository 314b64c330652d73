"""The API fuzzed from its own OpenAPI schema (/api/schema/) with schemathesis, every check on.

Each operation gets generated requests, valid and invalid, from an admin API key
of an organisation that holds data: collections, indexed protected images, a
check with a match and its evidence, bulk jobs (one with per-file errors), a watch. A
second organisation's rows are there to be probed: their ids must answer 404.
Valid requests take their path ids from those rows half of the time, so the
fuzzer reaches the success paths and their documented shapes as well as the
404s; DELETE takes spare rows, so the rest stay for the operations fuzzed after
it. Every answer must be a documented status with the documented content type
and body shape (the errors included: imgprotect/schema.py), and none a 5xx.

Bounded for CI: ``IMGPROTECT_FUZZ_EXAMPLES`` examples an operation (default 25),
derandomised when ``CI`` is set. docs/api.md says how to run it with more.
"""
from __future__ import annotations

import os

import hypothesis.strategies as st
import pytest
import schemathesis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from schemathesis.config import SchemathesisConfig
from schemathesis.openapi.checks import RejectedPositiveData

from catalog.models import Collection, ProtectedImage
from matching.bulk.models import BulkJob, BulkJobError, Watch
from matching.models import Case, Check, HashList, Match
from tests.conftest import client_for
from tests.factories import CollectionFactory, OrganisationFactory, api_key_for
from tests.images import photo_png, resized_jpeg

# Transactional, like production: the uploads are indexed and the check runs when each request commits.
pytestmark = pytest.mark.django_db(transaction=True)

EXAMPLES = int(os.environ.get("IMGPROTECT_FUZZ_EXAMPLES", "25"))

# Path prefix -> the model whose ids the fuzzer should also try there.
ID_MODELS = {
    "/api/v1/collections/": Collection,
    "/api/v1/images/": ProtectedImage,
    "/api/v1/checks/": Check,
    "/api/v1/matches/": Match,
    "/api/v1/bulk-jobs/": BulkJob,
    "/api/v1/hash-lists/": HashList,
    "/api/v1/cases/": Case,
    "/api/v1/watches/": Watch,
}
SPARE = "spare"  # the collection that DELETE may remove
SPARE_IMAGE = "horse.png"  # the image that DELETE may remove


@pytest.fixture
def fuzz_data(org, settings, monkeypatch):  # type: ignore[no-untyped-def]
    """An organisation holding a bit of everything, and another organisation whose ids must stay invisible."""
    settings.IMGPROTECT_CNN_ENABLED = False  # hashes and geometric verification are enough to make a match
    settings.IMGPROTECT_SOURCE_ROOTS = []  # the API reads no source: bulk jobs are made here
    settings.ALLOWED_HOSTS = ["localhost", "testserver"]
    api = client_for(org)
    photos = CollectionFactory(organisation=org, slug="photos")
    CollectionFactory(organisation=org, slug=SPARE)
    for name in ("coffee", "chelsea", "rocket", "horse"):
        response = api.post("/api/v1/images/", {"collection": photos.pk, "key": f"{name}.png",
                                                "file": SimpleUploadedFile(f"{name}.png", photo_png(name))})
        assert response.status_code == 201, response.json()
    response = api.post("/api/v1/checks/?wait=10", {"file": SimpleUploadedFile("copy.jpg", resized_jpeg("chelsea"))},
                        format="multipart")
    assert response.status_code == 200 and response.json()["matches"], response.json()
    BulkJob.objects.create(organisation=org, collection=photos, kind="index", source="/crawls/a")
    failed = BulkJob.objects.create(organisation=org, kind="scan", source="/crawls/b", status=BulkJob.Status.FAILED,
                                    error="boom")
    BulkJobError.objects.create(job=failed, key="b/broken.jpg", code="corrupt_image", reason="truncated")
    assert api.post("/api/v1/hash-lists/", {"name": "partner", "file": SimpleUploadedFile("l.txt", b"ab" * 32)},
                    format="multipart").status_code == 201
    Watch.objects.create(organisation=org, source="/crawls/w", collection=photos, last_job=failed)
    other = OrganisationFactory(slug="rival")
    rival = CollectionFactory(organisation=other, slug="rival-photos")
    assert client_for(other).post("/api/v1/images/", {"collection": rival.pk, "file": SimpleUploadedFile(
        "astronaut.png", photo_png("astronaut"))}).status_code == 201
    assert Match.objects.filter(evidence__gt="").exists()
    Match.objects.filter(organisation=org).update(case=Case.objects.create(organisation=org, kind="site",
                                                                           source="copycat.example"))
    rival_case = Case.objects.create(organisation=other, kind="site", source="copycat.example")
    foreign = {"/api/v1/collections/": {rival.pk}, "/api/v1/images/": set(
        ProtectedImage.objects.filter(collection=rival).values_list("pk", flat=True)),
        "/api/v1/cases/": {rival_case.pk}}
    # A cancelled job could be resumed by the fuzzer: record the run instead of starting Spark.
    from imgprotect import dispatch

    real_task = dispatch.task
    monkeypatch.setattr(dispatch, "task", lambda name: _NoRun() if name == "workers.bulk.run_bulk_job"
                        else real_task(name))
    return {"key": api_key_for(org), "foreign": foreign}


class _NoRun:
    def delay(self, *args: object) -> None:
        pass


@pytest.fixture
def wsgi_app(fuzz_data):  # type: ignore[no-untyped-def]
    """Django's WSGI handler, without its per-request connection closing (as django.test.Client does)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(wsgi_app):  # type: ignore[no-untyped-def]
    config = SchemathesisConfig()
    config.projects.default.generation.update(max_examples=EXAMPLES, deterministic=bool(os.environ.get("CI")),
                                              database="none")
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, config=config)

    # The rows as they are now: generation must not depend on what earlier requests deleted.
    existing = {prefix: sorted(model.objects.values_list("pk", flat=True)) for prefix, model in ID_MODELS.items()}
    spare = {
        "/api/v1/collections/": list(Collection.objects.filter(slug=SPARE).values_list("pk", flat=True)),
        "/api/v1/images/": list(ProtectedImage.objects.filter(key=SPARE_IMAGE).values_list("pk", flat=True)),
    }

    @schema.hook
    def flatmap_case(context, case):  # type: ignore[no-untyped-def]
        # Only valid generated cases get real ids: an invalid one must stay invalid.
        if case.meta is None or case.meta.phase.name != "fuzzing" or not case.meta.generation.mode.is_positive:
            return st.just(case)
        path = context.operation.path
        pools = spare if context.operation.method.upper() == "DELETE" else existing
        ids = next((ids for prefix, ids in pools.items() if path.startswith(prefix)), None)
        if ids and "id" in (case.path_parameters or {}):
            return st.one_of(st.just(case), st.sampled_from(ids).map(
                lambda pk: _with(case, path_parameters={**case.path_parameters, "id": pk})))
        return st.just(case)

    @schema.hook
    def filter_failure(context, failure, case, response):  # type: ignore[no-untyped-def]
        return not (isinstance(failure, RejectedPositiveData) and _refused_for_what_no_schema_says(response))

    return schema


# A schema cannot say which ids are yours, which bytes decode to a picture, which strings are
# e-mail addresses or which directories are allowed sources: a 400 for those is a right answer to
# schema-valid input (positive_data_acceptance). Field messages are matched by their ending.
IMAGE_ERROR_CODES = {"empty_file", "file_too_large", "unsupported_format", "corrupt_image", "too_many_pixels",
                     "image_too_small"}
SEMANTIC_FIELD_ERRORS = {
    "collection": ("No such collection in your organisation.", "not one of the available choices."),
    "check": ("No such check in your organisation.",),
    "assignee": ("No such member in your organisation.",),  # a case's assignee (matching/cases_api.py)
    "watch": ("No such watch in your organisation.",),
    "alert_emails": ("is not a valid e-mail address.",),  # catalog/models.py validate_email_list
    "file": ("No file was submitted.", "The submitted file is empty."),
    "photo": ("No file was submitted.", "The submitted file is empty."),  # HMA's POST /m/lookup
}
# DRF refuses NUL characters in every text field; a pattern on each string would say it, noisily.
NUL_REFUSED = "Null characters are not allowed."


def _refused_for_what_no_schema_says(response) -> bool:  # type: ignore[no-untyped-def]
    if response.status_code != 400:
        return False
    body = response.json()
    # A hash list's file is read line by line (docs/hash-exchange.md): random bytes are not PDQ hashes.
    if body["error"] in IMAGE_ERROR_CODES | {"source_not_allowed", "invalid_collection", "invalid_hash_list"}:
        return True
    fields = body.get("fields") or {}
    return bool(fields) and all(
        all(str(m) == NUL_REFUSED or str(m).endswith(SEMANTIC_FIELD_ERRORS.get(name, ())) for m in messages)
        for name, messages in fields.items()
    )


def _with(case, **changes):  # type: ignore[no-untyped-def]
    for name, value in changes.items():
        setattr(case, name, value)
    return case


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api_answers_as_its_schema_says(case, fuzz_data):  # type: ignore[no-untyped-def]
    def another_organisations_rows_are_not_found(ctx, response, case):  # type: ignore[no-untyped-def]
        pk = (case.path_parameters or {}).get("id")
        foreign = next((ids for prefix, ids in fuzz_data["foreign"].items() if case.path.startswith(prefix)), set())
        assert pk not in foreign or response.status_code == 404, (
            f"another organisation's row answered {response.status_code}")

    case.call_and_validate(headers={"Authorization": f"Api-Key {fuzz_data['key']}"},
                           additional_checks=[another_organisations_rows_are_not_found])


def test_real_uploads_and_checks_answer_as_the_schema_says(api_schema, fuzz_data):  # type: ignore[no-untyped-def]
    """Random bytes never decode, so the fuzzer meets uploads' and checks' refusals only: their
    success and conflict answers are validated here, with real pictures, under the same checks."""
    headers = {"Authorization": f"Api-Key {fuzz_data['key']}"}
    photos = Collection.objects.get(slug="photos").pk

    def call(path, method, expected, query=None, **body):  # type: ignore[no-untyped-def]
        case = api_schema[path][method].Case(body=body, query=query or {}, media_type="multipart/form-data")
        response = case.call_and_validate(headers=headers)
        assert response.status_code == expected, response.text

    call("/api/v1/images/", "POST", 201, collection=photos, key="astronaut.png", file=photo_png("astronaut"))
    call("/api/v1/images/", "POST", 409, collection=photos, key="astronaut.png", file=photo_png("rocket"))
    call("/api/v1/checks/", "POST", 200, {"wait": 10}, file=resized_jpeg("rocket"))
    call("/api/v1/checks/", "POST", 202, collection=photos, file=photo_png("coffee"))
