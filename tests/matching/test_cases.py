"""Cases: matches grouped by the site or scanned source their copies came from (matching/cases.py)."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import transaction

from catalog import services as catalog_services
from catalog.models import Membership, Role
from imgprotect.errors import ServiceError
from matching.bulk.load import load_scan
from matching.bulk.models import BulkJob
from matching.cases import case_update, cases_attach, site_of
from matching.models import Case, CaseEvent, CheckOrigin, Match
from matching.portal.case_evidence import case_evidence_export
from matching.review import Decision, match_review
from tests.factories import UserFactory
from tests.portal.conftest import evidence_png, protect, record_check, small_jpeg, small_png, world  # noqa: F401


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the world makes five users


@pytest.mark.parametrize("found_at,site", [
    ("https://WWW.Example.com/a/b.jpg", "example.com"),
    ("http://example.com/other/path?x=1", "example.com"),
    ("example.com/gallery/3", "example.com"),
    ("www.EXAMPLE.com", "example.com"),
    ("https://user:pw@Example.com:8443/x", "example.com"),
    ("https://www.example.com./", "example.com"),
    ("https://img.example.com/x", "img.example.com"),  # a subdomain is its own site
    ("https://Bücher.de/katalog", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de/x", "xn--bcher-kva.de"),
    ("", ""), ("   ", ""), ("https:///nohost", ""),
])
def test_site_of_normalises_hosts(found_at, site):
    assert site_of(found_at) == site


def found_on(world, source: str, *, quality: int, org=None) -> Match:  # type: ignore[no-untyped-def]
    """A check of ``world.image`` whose suspect was found at ``source``, written as check_run writes it."""
    org = org or world.org
    image = world.image if org == world.org else world.extra["rival_image"]
    with transaction.atomic():  # the origin exists before the match is written, as portal_check_submit ensures
        check = record_check(org, small_jpeg("coffee", 130, quality), [], name=f"q{quality}.jpg")
        if source:
            CheckOrigin.objects.create(source_check=check, source=source)
        match = Match.objects.create(source_check=check, organisation=org, protected_image=image, score=0.9,
                                     verdict="near_duplicate")
        cases_attach(matches=[match])
    match.refresh_from_db()
    return match


def test_matches_from_one_site_form_one_case_per_organisation(world):
    rival_collection = catalog_services.collection_create(organisation=world.rival, name="Theirs")
    world.extra["rival_image"] = protect(rival_collection, "coffee.png", small_png("coffee"))
    a = found_on(world, "https://www.Copycat.example/shop/1.jpg", quality=61)
    b = found_on(world, "http://copycat.example/blog/2024/post", quality=62)
    c = found_on(world, "COPYCAT.EXAMPLE", quality=63)
    other = found_on(world, "https://elsewhere.example/1.jpg", quality=64)
    unknown = found_on(world, "", quality=65)
    rival = found_on(world, "https://copycat.example/shop/1.jpg", quality=66, org=world.rival)

    assert a.case_id is not None and a.case_id == b.case_id == c.case_id
    case = Case.objects.get(pk=a.case_id)
    assert (case.organisation, case.kind, case.source, case.status) == (world.org, "site", "copycat.example", "open")
    assert other.case_id not in (None, a.case_id)
    assert unknown.case_id is None  # no known source: no case
    assert rival.case_id is not None and rival.case_id != a.case_id
    assert Case.objects.get(pk=rival.case_id).organisation == world.rival  # organisations never share a case
    assert set(Match.objects.filter(case=case).values_list("pk", flat=True)) == {a.pk, b.pk, c.pk}
    actions = list(CaseEvent.objects.filter(case=case).values_list("action", flat=True))
    assert actions == ["opened", "matches_added", "matches_added", "matches_added"]
    # attaching again changes nothing
    assert cases_attach(matches=[a]) == []


def test_a_check_submitted_with_found_at_joins_its_sites_case_when_it_runs(db, django_capture_on_commit_callbacks,
                                                                           settings):
    """Through the real write path (check_run -> _write_outcome), not a stand-in."""
    settings.IMGPROTECT_CNN_ENABLED = False  # resized copies: the hashes find them without loading TensorFlow
    from matching.core.loading import load_image
    from matching.portal.services import portal_check_submit

    from matching.protection import protected_image_add

    org = catalog_services.organisation_create(slug="acme", name="Acme")
    user = UserFactory()
    reference = small_png("coffee", 256)
    with django_capture_on_commit_callbacks(execute=True):  # indexes it, as the worker would
        protected_image_add(collection=catalog_services.collection_create(organisation=org, name="Photos"),
                            key="coffee.png", data=reference, loaded=load_image(reference), filename="coffee.png")

    def submit(found_at: str, quality: int) -> Match | None:
        data = small_jpeg("coffee", 200, quality)
        with django_capture_on_commit_callbacks(execute=True):
            check = portal_check_submit(organisation=org, data=data, loaded=load_image(data), filename="s.jpg",
                                        collection=None, found_at=found_at, user=user)
        return Match.objects.filter(source_check=check).first()

    first = submit("https://www.copycat.example/a.jpg", 70)
    second = submit("https://copycat.example/b/c.jpg", 60)
    anonymous = submit("", 50)
    assert first is not None and second is not None and anonymous is not None
    assert first.case_id is not None and first.case_id == second.case_id
    assert Case.objects.get().source == "copycat.example"
    assert anonymous.case_id is None


def test_scan_matches_are_grouped_by_the_scans_source_prefix(world, tmp_path: Path, settings):
    from tests.bulk.test_services import write_output

    settings.IMGPROTECT_BULK_WORK_DIR = str(tmp_path / "bulk")
    rocket = protect(world.collection, "rocket.png", small_png("rocket"))

    def scan(source: str, keys: list[str]) -> BulkJob:
        job = BulkJob.objects.create(organisation=world.org, kind="scan", source=source, status="loading")
        rows = [{"key": key, "size": 10, "matches": json.dumps([
            {"reference_id": image.pk, "verdict": "near_duplicate", "score": 0.93, "signal_scores": {},
             "region": None, "edit": None} for image in (world.image, rocket)][:1 + n % 2])}
            for n, key in enumerate(keys)]
        write_output(job, rows)
        load_scan(job, heartbeat=lambda: None)
        return job

    scan("s3://crawl/site-a/", ["2025/a.jpg", "2025/b.jpg"])
    scan("/data/crawl-b", ["x.jpg"])
    scan("s3://crawl/site-a", ["2026/c.jpg"])  # a later scan of the same source: the same case
    site_a = Case.objects.get(organisation=world.org, kind="scan", source="s3://crawl/site-a")
    crawl_b = Case.objects.get(organisation=world.org, kind="scan", source="/data/crawl-b")
    assert sorted(Match.objects.filter(case=site_a).values_list("suspect_key", flat=True)) == [
        "s3://crawl/site-a/2025/a.jpg", "s3://crawl/site-a/2025/b.jpg", "s3://crawl/site-a/2025/b.jpg",
        "s3://crawl/site-a/2026/c.jpg"]
    assert list(Match.objects.filter(case=crawl_b).values_list("suspect_key", flat=True)) == ["/data/crawl-b/x.jpg"]
    assert not Match.objects.filter(source_check__isnull=True, case__isnull=True).exists()


def test_status_changes_are_recorded_with_who_when_and_why(world):
    case = Case.objects.get(pk=found_on(world, "https://copycat.example/1.jpg", quality=61).case_id)
    member, admin = world.users[Role.MEMBER], world.users[Role.ADMIN]
    case = case_update(case=case, actor=member, status="notice_sent", note="DMCA notice to abuse@copycat.example")
    case = case_update(case=case, actor=admin, assignee=member, assign=True)
    case = case_update(case=case, actor=member, note="They asked for a week.")
    case = case_update(case=case, actor=admin, status="resolved", note="Taken down.")
    assert (case.status, case.assignee) == ("resolved", member)
    history = [(e.action, e.from_status, e.to_status, e.actor, e.note) for e in case.events.order_by("id")][2:]
    assert history == [
        ("status", "open", "notice_sent", member, "DMCA notice to abuse@copycat.example"),
        ("assigned", "", "notice_sent", admin, "Assigned to member-user."),
        ("note", "", "notice_sent", member, "They asked for a week."),
        ("status", "notice_sent", "resolved", admin, "Taken down."),
    ]
    with pytest.raises(ServiceError) as bad:
        case_update(case=case, actor=member, status="closed")
    assert bad.value.code == "invalid_status"
    with pytest.raises(ServiceError) as nothing:
        case_update(case=case, actor=member, status="resolved")
    assert nothing.value.code == "nothing_to_change"
    stranger = UserFactory()
    with pytest.raises(ServiceError) as foreign:
        case_update(case=case, actor=admin, assignee=stranger, assign=True)
    assert foreign.value.code == "invalid_assignee"
    Membership.objects.create(user=stranger, organisation=world.rival, role=Role.OWNER)
    with pytest.raises(ServiceError):  # a member of another organisation is a stranger here
        case_update(case=case, actor=admin, assignee=stranger, assign=True)

    # A new copy from the same site opens a resolved case again; one already resolved by a licence does not.
    found_on(world, "copycat.example/new.jpg", quality=62)
    case.refresh_from_db()
    assert case.status == "open"
    reopened = case.events.order_by("id").last()
    assert reopened is not None and (reopened.action, reopened.from_status, reopened.to_status) == (
        "reopened", "resolved", "open")
    case_update(case=case, actor=member, status="notice_sent")
    found_on(world, "copycat.example/newer.jpg", quality=63)
    case.refresh_from_db()
    assert case.status == "notice_sent"  # still waiting for the answer to the notice


def test_backfill_puts_earlier_matches_into_cases_once(world):
    with_origin = record_check(world.org, small_jpeg("coffee", 130, 61), [world.image], name="a.jpg")
    CheckOrigin.objects.create(source_check=with_origin, source="https://www.copycat.example/a")
    BulkJob.objects.create(organisation=world.org, kind="scan", source="s3://crawl", status="done")
    BulkJob.objects.create(organisation=world.org, kind="scan", source="s3://crawl/deeper/", status="done")
    shallow = Match.objects.create(organisation=world.org, protected_image=world.image, score=0.9,
                                   verdict="near_duplicate", suspect_key="s3://crawl/x.jpg")
    deep = Match.objects.create(organisation=world.org, protected_image=world.image, score=0.9,
                                verdict="near_duplicate", suspect_key="s3://crawl/deeper/y.jpg")
    orphan = Match.objects.create(organisation=world.org, protected_image=world.image, score=0.9,
                                  verdict="near_duplicate", suspect_key="s3://gone/z.jpg")
    assert not Case.objects.exists()
    out = io.StringIO()
    call_command("cases_backfill", stdout=out)
    assert "3 match(es) joined a case" in out.getvalue()
    assert Match.objects.get(source_check=with_origin).case.source == "copycat.example"  # type: ignore[union-attr]
    assert Match.objects.get(pk=shallow.pk).case.source == "s3://crawl"  # type: ignore[union-attr]
    assert Match.objects.get(pk=deep.pk).case.source == "s3://crawl/deeper"  # type: ignore[union-attr]
    assert Match.objects.get(pk=orphan.pk).case is None and world.match.case is None
    out = io.StringIO()
    call_command("cases_backfill", "--org", "acme", stdout=out)
    assert out.getvalue().startswith("0 match(es) joined a case; 3 case(s)")
    with pytest.raises(CommandError, match="no organisation 'nope'"):
        call_command("cases_backfill", "--org", "nope")


def test_the_case_package_holds_every_match_and_a_summary_a_notice_can_quote(world, settings):
    settings.SITE_URL = "https://imgprotect.test"
    first = found_on(world, "https://www.copycat.example/shop/coffee-mug.jpg", quality=61)
    second = found_on(world, "https://copycat.example/blog/post-7\nForged: line", quality=62)
    dismissed = found_on(world, "https://copycat.example/unrelated.jpg", quality=63)
    first.evidence.save("evidence.png", ContentFile(evidence_png()), save=True)
    member = world.users[Role.MEMBER]
    match_review(organisation=world.org, match_ids=[first.pk], decision=Decision.CONFIRM, actor=member)
    match_review(organisation=world.org, match_ids=[dismissed.pk], decision=Decision.DISMISS, actor=member)
    case = Case.objects.get(pk=first.case_id)
    case = case_update(case=case, actor=member, status="notice_sent", note="Notice sent on the 3rd.")

    name, handle = case_evidence_export(case=case, actor=member)
    assert name == f"imgprotect-evidence-case-{case.pk}.zip"
    with zipfile.ZipFile(handle) as archive:
        files = {n: archive.read(n) for n in archive.namelist()}
    root = f"case-{case.pk}/"
    assert {f"{root}SUMMARY.txt", f"{root}case.json", f"{root}SHA256SUMS",
            f"{root}match-{first.pk}/evidence.png", f"{root}match-{first.pk}/protected.png",
            f"{root}match-{first.pk}/suspect.jpg", f"{root}match-{first.pk}/report.txt",
            f"{root}match-{second.pk}/report.json"} <= set(files)
    assert not any(f"match-{dismissed.pk}/" in n for n in files)  # judged no copy: left out
    summary = files[f"{root}SUMMARY.txt"].decode()
    assert "Website:        copycat.example" in summary and "Status:         Notice sent" in summary
    assert "https://www.copycat.example/shop/coffee-mug.jpg" in summary
    assert "https://copycat.example/blog/post-7 Forged: line" in summary  # kept on its own line
    assert not any(line.startswith("Forged") for line in summary.splitlines())
    assert summary.count("Protected image: coffee.png") == 2
    assert f"Match #{first.pk}: Near duplicate" in summary and "review: Confirmed infringement" in summary
    assert f"Match #{second.pk}" in summary and "review: New" in summary
    assert "1 dismissed match" in summary and "Notice sent on the 3rd." in summary
    assert "Review status:  New" in files[f"{root}match-{second.pk}/report.txt"].decode()
    data = json.loads(files[f"{root}case.json"])
    assert [m["match_id"] for m in data["matches"]] == sorted([first.pk, second.pk], reverse=True)
    for line in files[f"{root}SHA256SUMS"].decode().splitlines():
        digest, path = line.split("  ", 1)
        assert hashlib.sha256(files[root + path]).hexdigest() == digest
    assert len(files[f"{root}SHA256SUMS"].decode().splitlines()) == len(files) - 1
    assert case.events.order_by("id").last().action == "exported"  # type: ignore[union-attr]
