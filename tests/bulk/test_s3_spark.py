"""S3 for real, against moto's S3 server on loopback: the Spark source and the django-storages storage.

One Spark run: index s3://crawl/drop (odd keys) into a collection whose images
are stored in another bucket through django-storages with a custom endpoint.
"""
from __future__ import annotations

import socket

import pytest
from django.core.files.storage import default_storage

from catalog.models import ProtectedImage
from imgprotect.errors import ServiceError
from matching import protection
from matching.bulk import services
from matching.bulk.models import BulkJobError
from matching.core.loading import load_image
from tests.bulk.folders import BAD, GOOD
from tests.factories import CollectionFactory
from tests.images import photo_png
from tests.spark.s3server import CREDENTIALS, s3_server


def s3_storage(endpoint: str) -> dict:
    return {
        "default": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
            "bucket_name": "media", "endpoint_url": endpoint, "region_name": "us-east-1", "access_key": "testing",
            "secret_key": "testing", "location": "imgprotect", "default_acl": None, "querystring_auth": False,
            "file_overwrite": False}},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.mark.django_db
def test_index_from_s3_into_s3_storage(org, settings, monkeypatch):
    with s3_server(monkeypatch) as s3:
        s3.bucket("crawl")
        s3.bucket("media")
        files = {**{k: make() for k, make in GOOD.items()}, "bad/truncated.jpg": BAD["bad/truncated.jpg"][0]()}
        for key, data in files.items():
            s3.put("crawl", f"drop/{key}", data)
        s3.put("crawl", "private/secret.png", photo_png("coins"))
        settings.STORAGES = s3_storage(s3.endpoint)
        settings.IMGPROTECT_SOURCE_S3_ENDPOINT_URL = s3.endpoint
        settings.IMGPROTECT_SOURCE_ROOTS = [f"{org.slug}=s3://crawl/drop"]
        collection = CollectionFactory(organisation=org)

        with pytest.raises(ServiceError, match="outside the source roots"):
            services.bulkjob_create(organisation=org, kind="index", source="s3://crawl/private",
                                    collection=collection)
        job = services.bulkjob_create(organisation=org, kind="index", source="s3://crawl/drop/",
                                      collection=collection, start=False)
        job = services.bulkjob_run(job_id=job.pk)
        assert job.status == "done", (job.error, job.log_tail[-2000:])
        assert (job.total, job.done, job.failed) == (len(files), len(GOOD), 1)
        assert list(BulkJobError.objects.filter(job=job).values_list("key", "code")) == [
            ("bad/truncated.jpg", "corrupt_image")]

        images = {i.key: i for i in ProtectedImage.objects.filter(collection=collection)}
        assert set(images) == set(GOOD)  # object keys kept exactly, the prefix stripped
        for key, image in images.items():
            with default_storage.open(image.file.name, "rb") as fh:  # read back through django-storages
                assert fh.read() == files[key]
            assert image.features.name, key  # every good image has its local features stored beside it
            with default_storage.open(image.features.name, "rb") as fh:
                assert fh.read()[:2] == b"PK"  # an npz archive
        stored = s3.keys("media", "imgprotect/protected/")
        assert sorted(f"imgprotect/{i.file.name}" for i in images.values()) == stored

        # The in-process path writes through django-storages to the same server.
        data = photo_png("rocket")
        image = protection.protected_image_add(collection=collection, key="rocket upload.png", data=data,
                                                     loaded=load_image(data), index_now=True)
        assert s3.get("media", f"imgprotect/{image.file.name}") == data


@pytest.mark.django_db
def test_unreachable_s3_source_fails_the_job_at_once(org, settings, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings.IMGPROTECT_SOURCE_S3_ENDPOINT_URL = f"http://127.0.0.1:{port}"
    for name, value in CREDENTIALS.items():  # without them boto refuses before connecting
        monkeypatch.setenv(name, value)
    job = services.bulkjob_create(organisation=org, kind="scan", source="s3://crawl/drop", trusted=True,
                                  start=False)
    spark_runs: list[int] = []
    monkeypatch.setattr(services, "_run_spark", lambda job, on_progress: spark_runs.append(job.pk))
    job = services.bulkjob_run(job_id=job.pk)
    assert job.status == "failed" and f"cannot list s3://crawl/drop at http://127.0.0.1:{port}" in job.error
    assert "Could not connect" in job.error
    assert job.driver_pid is None and spark_runs == []  # refused before any JVM starts
