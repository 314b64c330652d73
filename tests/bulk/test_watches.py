"""Watches: the API (tenant-scoped, validated like bulk scans), the beat task that starts due runs,
failing and paused states, the portal page, and two real runs on local Spark where the second scans
only the file added in between; a scan's alerts arrive as one summary per collection."""
from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from catalog.models import Role
from matching import protection
from matching.bulk import services
from matching.bulk.models import BulkJob, BulkJobError, Watch, WatchKey
from matching.bulk.watches import watch_matches
from matching.core.loading import load_image
from matching.models import Match, Webhook, WebhookDelivery
from spark.progress import read_progress
from tests.bulk.folders import write
from tests.conftest import client_for
from tests.factories import CollectionFactory, MembershipFactory, OrganisationFactory, UserFactory
from tests.images import photo_png, png_declaring, resized_jpeg, truncated_jpeg
from workers.bulk import start_due_watches

pytestmark = pytest.mark.django_db


@pytest.fixture
def drops(settings, tmp_path: Path) -> Path:
    """The organisation's allowed root, holding one drop folder with a picture."""
    root = tmp_path / "drops"
    write(root, {"acme/in/a.png": photo_png("coffee")})
    settings.IMGPROTECT_SOURCE_ROOTS = f"acme={root / 'acme'}"
    return root / "acme"


# --- API ---------------------------------------------------------------------------------------------

def test_api_creates_lists_pauses_resumes_and_deletes_a_watch(api, org, drops):
    collection = CollectionFactory(organisation=org, name="Brand")
    response = api.post("/api/v1/watches/", {"source": str(drops / "in"), "collection": collection.pk,
                                             "schedule": "hourly"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["source"], body["collection"], body["schedule"], body["enabled"]) == (
        str(drops / "in"), collection.pk, "hourly", True)
    assert body["state"] == "scheduled" and body["last_run"] is None and body["last_job"] is None
    assert response["Location"] == f"/api/v1/watches/{body['id']}/"
    url = f"/api/v1/watches/{body['id']}/"
    assert [w["id"] for w in api.get("/api/v1/watches/").json()["results"]] == [body["id"]]

    paused = api.patch(url, {"enabled": False}, format="json").json()
    assert paused["state"] == "paused" and paused["status_reason"].startswith("Paused")
    assert api.get("/api/v1/watches/?enabled=false").json()["count"] == 1
    resumed = api.patch(url, {"enabled": True, "schedule": "daily"}, format="json").json()
    assert (resumed["state"], resumed["schedule"]) == ("scheduled", "daily")

    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404 and not Watch.objects.exists()


def test_api_refuses_bad_input_other_organisations_and_low_roles(api, org, drops):
    other = OrganisationFactory(slug="beta")
    theirs = Watch.objects.create(organisation=other, source="/data/beta/in")
    foreign_collection = CollectionFactory(organisation=other)
    for url in (f"/api/v1/watches/{theirs.pk}/", "/api/v1/watches/99999999/", "/api/v1/watches/abc/"):
        assert api.get(url).status_code == 404, url
        assert api.patch(url, {"enabled": False}, format="json").status_code == 404, url
        assert api.delete(url).status_code == 404, url
    theirs.refresh_from_db()
    assert theirs.enabled
    assert api.get("/api/v1/watches/").json()["count"] == 0
    for query in ("enabled=null", "enabled=maybe", "schedule=weekly"):  # not "no filter": a clear 400
        assert api.get(f"/api/v1/watches/?{query}").status_code == 400, query
    assert api.get(f"/api/v1/bulk-jobs/?watch={theirs.pk}").status_code == 400  # not one of ours

    bad = [({"source": "/etc"}, "source_not_allowed"), ({"source": str(drops / ".." / "..")}, "source_not_allowed"),
           ({"source": "s3://bucket/elsewhere"}, "source_not_allowed"), ({}, "source"),
           ({"source": str(drops), "schedule": "weekly"}, "schedule"), ({"source": 5}, "source"),
           ({"source": str(drops), "collection": foreign_collection.pk}, "collection")]
    for payload, code in bad:
        response = api.post("/api/v1/watches/", payload, format="json")
        assert response.status_code == 400, (payload, response.json())
        assert response.json()["error"] == code or code in response.json().get("fields", {}), payload
    assert api.post("/api/v1/watches/", {"source": str(drops)}, format="json").status_code == 201
    again = api.post("/api/v1/watches/", {"source": str(drops) + "/"}, format="json")
    assert again.status_code == 400 and again.json()["error"] == "duplicate_watch"
    ours = Watch.objects.get(organisation=org)
    assert api.patch(f"/api/v1/watches/{ours.pk}/", {"source": "/etc"}, format="json").json()["source"] == str(drops)

    member = client_for(org, Role.MEMBER)
    assert member.get("/api/v1/watches/").json()["count"] == 1  # members read
    assert member.post("/api/v1/watches/", {"source": str(drops / "in")}, format="json").status_code == 403
    assert member.patch(f"/api/v1/watches/{ours.pk}/", {"enabled": False}, format="json").status_code == 403
    assert member.delete(f"/api/v1/watches/{ours.pk}/").status_code == 403
    assert Watch.objects.filter(organisation=org).count() == 1 and Watch.objects.get(pk=ours.pk).enabled


# --- scheduling ---------------------------------------------------------------------------------------

def test_beat_starts_due_watches_once_and_records_why_a_run_cannot_start(org, drops,
                                                                        django_capture_on_commit_callbacks):
    due = Watch.objects.create(organisation=org, source=str(drops / "in"), schedule="hourly",
                               next_run=timezone.now() - timedelta(minutes=5))
    later = Watch.objects.create(organisation=org, source=str(drops), next_run=timezone.now() + timedelta(hours=1))
    paused = Watch.objects.create(organisation=org, source=str(drops / "in") + "-paused", enabled=False,
                                  next_run=timezone.now() - timedelta(days=1))
    with django_capture_on_commit_callbacks() as callbacks:
        assert start_due_watches() == 1
    job = BulkJob.objects.get()
    assert (job.kind, job.source, job.watch_id, job.status) == ("scan", str(drops / "in"), due.pk, "queued")
    assert len(callbacks) == 1  # its run_bulk_job, after commit
    due.refresh_from_db()
    assert due.last_job == job and due.state == "running" and due.last_run is not None
    assert timedelta(minutes=59) < due.next_run - timezone.now() <= timedelta(hours=1)
    assert start_due_watches() == 0  # claimed: nothing is due now; the later and the paused one wait
    later.refresh_from_db()
    paused.refresh_from_db()
    assert later.last_run is None and paused.last_run is None and paused.state == "paused"

    # A run still going when the next one is due: no second run at once.
    Watch.objects.filter(pk=due.pk).update(next_run=timezone.now() - timedelta(seconds=1))
    assert start_due_watches() == 0 and BulkJob.objects.count() == 1

    # The run failed: the watch says so, with the run's reason.
    BulkJob.objects.filter(pk=job.pk).update(status="failed", error="spark-submit exited with status 1")
    due.refresh_from_db()
    assert due.state == "failing" and "spark-submit exited with status 1" in due.status_reason

    # The source disappeared: no job, the watch is failing and says why; resuming retries it.
    shutil.rmtree(drops / "in")
    Watch.objects.filter(pk=due.pk).update(next_run=timezone.now() - timedelta(seconds=1))
    assert start_due_watches() == 0 and BulkJob.objects.count() == 1
    due.refresh_from_db()
    assert due.state == "failing" and "is not a readable directory" in due.status_reason


# --- alerts: one summary per scan and collection --------------------------------------------------

def test_a_scan_sends_one_email_and_one_webhook_event_per_collection(org, settings):
    settings.IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = True
    brand = CollectionFactory(organisation=org, name="Brand", alert_emails="brand@acme.test")
    other = CollectionFactory(organisation=org, name="Other", alert_emails="other@acme.test")
    images = [protection.protected_image_add(collection=c, key=f"{n}.png", data=photo_png(n),
                                             loaded=load_image(photo_png(n)), index_now=True)
              for c, n in ((brand, "coffee"), (brand, "chelsea"), (brand, "rocket"), (other, "horse"))]
    hook = Webhook.objects.create(organisation=org, url="https://hooks.example.com/x")
    job = BulkJob.objects.create(organisation=org, kind="scan", source="/crawl", status="done")
    matches = [Match.objects.create(organisation=org, protected_image=image, suspect_key=f"/crawl/{n}.jpg",
                                    score=0.9, verdict="near_duplicate", source_check=None)
               for n, image in enumerate(images)]
    job.matches.add(*matches)
    assert services.scan_summary_send(job_id=job.pk) == 2
    assert sorted(m.to[0] for m in mail.outbox) == ["brand@acme.test", "other@acme.test"]
    brand_mail = next(m for m in mail.outbox if m.to == ["brand@acme.test"])
    assert brand_mail.subject == "[imgprotect] Scan of /crawl: 3 new matches in Brand"
    assert all(f"/crawl/{n}.jpg" in brand_mail.body for n in range(3))
    deliveries = WebhookDelivery.objects.filter(webhook=hook)
    assert sorted(deliveries.values_list("event", flat=True)) == ["scan.matches", "scan.matches"]
    brand_event = next(d.payload["data"] for d in deliveries if d.payload["data"]["collection"]["id"] == brand.pk)
    assert brand_event["count"] == 3 and brand_event["scan"] == {"id": job.pk, "source": "/crawl", "watch": None}
    assert {m["suspect"]["key"] for m in brand_event["matches"]} == {f"/crawl/{n}.jpg" for n in range(3)}
    # Sent once: a redelivered task, or the loader's second pass, adds nothing.
    assert services.scan_summary_send(job_id=job.pk) == 0 and len(mail.outbox) == 2 and deliveries.count() == 2


# --- two real runs on local Spark ------------------------------------------------------------------

def test_second_run_scans_only_the_new_file_and_each_run_alerts_once(org, drops, settings,
                                                                     django_capture_on_commit_callbacks):
    collection = CollectionFactory(organisation=org, slug="brand", name="Brand", alert_emails="legal@acme.test")
    for name in ("coffee", "chelsea", "rocket"):
        data = photo_png(name)
        protection.protected_image_add(collection=collection, key=f"{name}.png", data=data,
                                       loaded=load_image(data), index_now=True)
    source = drops / "crawl"
    write(source, {"coffee copy.jpg": resized_jpeg("coffee", 0.5, 70), "chelsea copy.jpg": resized_jpeg("chelsea", 0.8),
                   "horse.jpg": resized_jpeg("horse", 0.8), "bad/truncated.jpg": truncated_jpeg(),
                   "bad/bomb.png": png_declaring(9000, 9000), "bad/notes.png": b"<html>not a picture</html>"})
    watch = Watch.objects.create(organisation=org, source=str(source), collection=collection, schedule="daily",
                                 next_run=timezone.now() - timedelta(minutes=1))

    def run_due() -> BulkJob:
        with django_capture_on_commit_callbacks(execute=True):  # run_bulk_job, then its alert summary
            assert start_due_watches() == 1
        job = BulkJob.objects.filter(watch=watch).latest("id")
        assert job.status == "done", job.error
        return job

    first = run_due()
    assert (first.total, first.done, first.failed, first.skipped, first.matched) == (6, 3, 3, 0, 2)
    assert dict(BulkJobError.objects.filter(job=first).values_list("key", "code")) == {
        "bad/truncated.jpg": "corrupt_image", "bad/bomb.png": "too_many_pixels", "bad/notes.png": "unsupported_format"}
    assert len(mail.outbox) == 1  # two matches in one collection: one e-mail listing both
    assert "Scan of" in mail.outbox[0].subject and "2 new matches in Brand" in mail.outbox[0].subject
    assert "coffee copy.jpg" in mail.outbox[0].body and "chelsea copy.jpg" in mail.outbox[0].body
    assert WatchKey.objects.filter(watch=watch).count() == 6  # bad files too: not reported again every day

    write(source, {"new/rocket copy.jpg": resized_jpeg("rocket", 0.6)})
    Watch.objects.filter(pk=watch.pk).update(next_run=timezone.now() - timedelta(seconds=1))  # a day later
    second = run_due()
    progress = read_progress(second.work_dir / "progress.json")
    assert progress is not None and progress["processed"] == 1  # only the new key was computed
    assert (second.total, second.done, second.failed, second.skipped, second.matched) == (7, 1, 0, 6, 1)
    assert [m.suspect_key for m in second.matches.all()] == [f"{source}/new/rocket copy.jpg"]
    assert len(mail.outbox) == 2 and "1 new match in Brand" in mail.outbox[1].subject
    assert watch_matches(watch=watch).count() == 3 and Match.objects.count() == 3
    watch.refresh_from_db()
    assert watch.state == "ok" and watch.last_job == second

    # The API and the portal show the same: state, last run, what it found, the unusable files.
    body = client_for(org).get(f"/api/v1/watches/{watch.pk}/").json()
    assert (body["state"], body["seen_keys"], body["match_reports"], body["last_job"]["done"]) == ("ok", 7, 3, 1)
    errors = client_for(org).get(f"/api/v1/bulk-jobs/{first.pk}/errors/").json()["results"]
    assert {e["code"] for e in errors} == {"corrupt_image", "too_many_pixels", "unsupported_format"}
    user = UserFactory()
    MembershipFactory(user=user, organisation=org, role=Role.VIEWER)
    browser = Client()
    browser.force_login(user)
    Watch.objects.filter(pk=watch.pk).update(last_job=first)  # the page lists the last run's unusable files
    html = browser.get(f"/o/{org.slug}/watches/").content.decode()
    assert "rocket copy.jpg" in html and "too_many_pixels" in html and "bad/bomb.png" in html


# --- portal ---------------------------------------------------------------------------------------

def test_portal_page_creates_pauses_deletes_and_escapes(org, drops):
    hostile = '<img src=x onerror="alert(1)">'
    (drops / hostile).mkdir()
    (drops / hostile / "a.png").write_bytes(photo_png("coffee"))
    users = {}
    for role in (Role.VIEWER, Role.ADMIN):
        users[role] = Client()
        user = UserFactory()
        MembershipFactory(user=user, organisation=org, role=role)
        users[role].force_login(user)
    admin, viewer = users[Role.ADMIN], users[Role.VIEWER]
    page = f"/o/{org.slug}/watches/"

    refused = admin.post(f"{page}new/", {"source": "/etc", "schedule": "daily"})
    assert refused.status_code == 400 and "outside the source roots" in refused.content.decode()
    response = admin.post(f"{page}new/", {"source": str(drops / hostile), "schedule": "hourly"})
    assert response.status_code == 302 and response["Location"] == page
    watch = Watch.objects.get()
    run = BulkJob.objects.create(organisation=org, kind="scan", source=watch.source, watch=watch, status="running",
                                 total=10, done=4)
    Watch.objects.filter(pk=watch.pk).update(last_job=run)
    html = viewer.get(page).content.decode()  # a running run: its live progress bar, as the dashboard's
    assert f'data-job-progress="/o/acme/bulk-jobs/{run.pk}/progress/"' in html and 'data-width="40"' in html
    assert viewer.get(f"/o/acme/bulk-jobs/{run.pk}/progress/").json() == {"status": "running", "done": 4,
                                                                          "total": 10, "failed": 0}
    Watch.objects.filter(pk=watch.pk).update(last_error=f"The source cannot be scanned: {hostile} is gone")
    html = admin.get(page).content.decode()
    assert hostile not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert 'data-state="failing"' in html and "is gone" in html and 'action="/o/acme/watches/new/"' in html
    as_viewer = viewer.get(page)
    assert as_viewer.status_code == 200 and "Watch a source" not in as_viewer.content.decode()
    assert viewer.post(f"{page}new/", {"source": str(drops), "schedule": "daily"}).status_code == 403
    assert viewer.post(f"{page}{watch.pk}/toggle/").status_code == 403

    assert admin.post(f"{page}{watch.pk}/toggle/").status_code == 302
    watch.refresh_from_db()
    assert not watch.enabled and 'data-state="paused"' in admin.get(page).content.decode()
    assert admin.post(f"{page}{watch.pk}/delete/").status_code == 302 and not Watch.objects.exists()
    assert admin.post(f"{page}{watch.pk}/delete/").status_code == 404
