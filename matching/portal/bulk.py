"""BULK-IMPORT HOOK: the portal's place for bulk imports and running bulk jobs.

Bulk jobs (index a server path or an S3 prefix, scan many suspects) are built in
``matching/bulk/`` by another issue. Until they are wired here, the portal shows
no bulk form and no job list (it points to ``manage.py index_images`` instead),
and nothing pretends to run.

To wire them, make these return real data; the templates already render it:

- ``collection_context(collection)`` → ``{"enabled": True, "start_url": <POST URL of a
  form with a "source" field: a server path or s3://bucket/prefix>, "jobs": [...]}``
  (templates/portal/_bulk_import.html);
- ``dashboard_context(organisation)`` → ``{"enabled": True, "jobs": [...]}``
  (templates/portal/_bulk_jobs.html);

where each job is a mapping with ``name``, ``status``, ``done``, ``total``, ``failed``
and ``progress_url`` (JSON ``{"status", "done", "total", "failed"}``; static/portal/
portal.js polls it every 2 s and moves the bar).
"""
from __future__ import annotations

from typing import Any

from catalog.models import Collection, Organisation


def collection_context(collection: Collection) -> dict[str, Any]:
    return {"enabled": False, "jobs": []}


def dashboard_context(organisation: Organisation) -> dict[str, Any]:
    return {"enabled": False, "jobs": []}
