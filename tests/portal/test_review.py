"""Review decisions: the audit trail, dismissed pairs, licences, bulk actions, and the evidence export."""
from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from django.urls import reverse

from catalog.models import Role
from catalog.services import collection_create
from imgprotect.errors import ServiceError
from matching.models import Match
from matching.portal.evidence import NotConfirmed, evidence_export
from matching.models import CheckOrigin, DismissedPair, Licence, ReviewEvent
from matching.review import (Decision, LicenceTerms, MatchNotFound, match_review, review_auto_resolve,
                             source_covered)
from tests.images import encode
from tests.portal.conftest import protect, record_check, small_jpeg, small_png


def test_confirm_is_recorded_with_who_and_when(world):
    member = world.users[Role.MEMBER]
    [done] = match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.CONFIRM,
                          actor=member, note="Sent to legal")
    assert done.review_status == "confirmed" and done.reviewed_by == member and done.reviewed is not None
    event = ReviewEvent.objects.get(match=world.match)
    assert (event.action, event.from_status, event.to_status, event.actor, event.note) == (
        "confirmed", "new", "confirmed", member, "Sent to legal")


def test_dismissed_pair_never_alerts_again_even_re_encoded(world):
    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.DISMISS,
                 actor=world.users[Role.MEMBER])
    pair = DismissedPair.objects.get()
    assert pair.protected_image == world.image and pair.suspect_sha256 == world.check.sha256_bytes
    same_bytes = record_check(world.org, world.check.file.open("rb").read(), [world.image])
    # the same pixels in another container (other bytes) are the same suspect picture
    from PIL import Image

    pixels = Image.open(world.check.file.open("rb")).convert("RGB")
    same_pixels = record_check(world.org, encode(pixels, "PNG"), [world.image], name="as.png")
    different = record_check(world.org, small_jpeg("coffee", 150, 40), [world.image])
    assert same_bytes.matches.get().review_status == "dismissed"
    assert same_pixels.matches.get().review_status == "dismissed"
    assert different.matches.get().review_status == "new"
    auto = ReviewEvent.objects.get(match__source_check=same_bytes)
    assert auto.action == "auto_dismissed" and auto.actor is None and "member-user" in auto.note
    # the pair only covers that protected image
    other_image = protect(world.collection, "rocket.png", small_png("rocket"))
    other = record_check(world.org, world.check.file.open("rb").read(), [other_image], name="x.jpg")
    assert other.matches.get().review_status == "new"


def test_reopening_or_confirming_lifts_the_dismissal(world):
    args = {"organisation": world.org, "match_ids": [world.match.pk], "actor": world.users[Role.MEMBER]}
    match_review(decision=Decision.DISMISS, **args)
    assert DismissedPair.objects.count() == 1
    match_review(decision=Decision.REOPEN, **args)
    assert DismissedPair.objects.count() == 0
    world.match.refresh_from_db()
    assert world.match.review_status == "new"
    assert list(ReviewEvent.objects.filter(match=world.match).values_list("action", flat=True)) == [
        "dismissed", "reopened"]


def test_licence_covers_its_source_only(world):
    CheckOrigin.objects.create(source_check=world.check, source="https://www.partner.example/catalogue/1")
    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.LICENSE,
                 actor=world.users[Role.MEMBER], licence=LicenceTerms("Partner Ltd", "partner.example"))
    licence = Licence.objects.get()
    assert (licence.holder, licence.source, licence.protected_image) == ("Partner Ltd", "partner.example",
                                                                          world.image)

    def found_at(source: str, quality: int) -> Match:
        from django.db import transaction

        with transaction.atomic():  # the origin must exist before matching, as portal_check_submit ensures
            check = record_check(world.org, small_jpeg("coffee", 130, quality), [], name="found.jpg")
            CheckOrigin.objects.create(source_check=check, source=source)
            match = Match.objects.create(source_check=check, organisation=world.org, protected_image=world.image,
                                         score=0.9, verdict="near_duplicate")
            review_auto_resolve(matches=[match])
        return match

    assert found_at("https://shop.partner.example/p/9", 61).review_status == "licensed"
    assert found_at("https://partner.example.evil.test/x", 62).review_status == "new"
    assert found_at("https://copycat.example/x", 63).review_status == "new"
    auto = ReviewEvent.objects.filter(action="auto_licensed").get()
    assert "Partner Ltd" in auto.note and f"#{licence.pk}" in auto.note
    licence.revoked = licence.created
    licence.save()
    assert found_at("https://shop.partner.example/p/10", 64).review_status == "new"


@pytest.mark.parametrize("licensed,found,covered", [
    ("", "anything", True), ("", "", True), ("example.com", "https://example.com/a", True),
    ("example.com", "https://img.example.com/a", True), ("example.com", "https://badexample.com/a", False),
    ("example.com", "example.com/path", True), ("example.com", "", False),
    ("https://cdn.example.com/brand/", "https://cdn.example.com/brand/logo.png", True),
    ("https://cdn.example.com/brand/", "https://cdn.example.com/other/logo.png", False),
    ("s3://bucket/partner/", "s3://bucket/partner/x.jpg", True), ("EXAMPLE.com", "https://Example.COM/", True),
])
def test_source_covered(licensed, found, covered):
    assert source_covered(licensed, found) is covered


def test_licence_needs_a_holder_and_decisions_are_checked(world):
    with pytest.raises(ServiceError, match="holds the licence"):
        match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.LICENSE,
                     actor=world.users[Role.MEMBER], licence=LicenceTerms("  "))
    with pytest.raises(ServiceError):
        match_review(organisation=world.org, match_ids=[world.match.pk], decision="delete", actor=None)
    with pytest.raises(ServiceError):
        match_review(organisation=world.org, match_ids=[], decision=Decision.CONFIRM, actor=None)
    assert not ReviewEvent.objects.exists()


def test_bulk_review_is_all_or_nothing_and_tenant_scoped(world):
    second = record_check(world.org, small_jpeg("coffee", 140, 50), [world.image]).matches.get()
    foreign_image = protect(collection_create(organisation=world.rival, name="R"), "r.png", small_png("rocket"))
    foreign = record_check(world.rival, small_jpeg("rocket"), [foreign_image]).matches.get()
    with pytest.raises(MatchNotFound):
        match_review(organisation=world.org, match_ids=[world.match.pk, foreign.pk], decision=Decision.CONFIRM,
                     actor=world.users[Role.MEMBER])
    assert Match.objects.filter(review_status="confirmed").count() == 0
    done = match_review(organisation=world.org, match_ids=[world.match.pk, second.pk], decision=Decision.CONFIRM,
                        actor=world.users[Role.MEMBER])
    assert {m.review_status for m in done} == {"confirmed"} and ReviewEvent.objects.count() == 2


def test_desk_bulk_action_through_the_view(world):
    second = record_check(world.org, small_jpeg("coffee", 140, 50), [world.image]).matches.get()
    client = world.client(Role.MEMBER)
    desk = reverse("portal:desk", args=["acme"])
    response = client.post(reverse("portal:desk-bulk", args=["acme"]),
                           {"ids": [world.match.pk, second.pk], "decision": "license", "holder": "Agency",
                            "source": "agency.example", "next": desk + "?status=new"})
    assert response.status_code == 302 and response["Location"] == desk + "?status=new"
    assert set(Match.objects.values_list("review_status", flat=True)) == {"licensed"}
    # a foreign id answers 404 and changes nothing; an open redirect is refused
    response = client.post(reverse("portal:desk-bulk", args=["acme"]),
                           {"ids": [world.match.pk, 999999], "decision": "confirm"})
    assert response.status_code == 404
    response = client.post(reverse("portal:desk-bulk", args=["acme"]),
                           {"ids": [world.match.pk], "decision": "reopen", "next": "https://evil.example/"})
    assert response["Location"] == desk
    page = client.get(desk + "?status=").content.decode()
    assert "Licensed" in page and page.count('data-id="') == 2
    assert client.get(desk).content.decode().count('data-id="') == 1  # default: to review


def test_desk_filters(world):
    second = record_check(world.org, small_jpeg("coffee", 140, 50), [world.image], verdict="exact",
                          score=1.0).matches.get()
    client = world.client(Role.VIEWER)
    desk = reverse("portal:desk", args=["acme"])

    def ids(query: str) -> set[int]:
        import re

        return {int(i) for i in re.findall(r'data-id="(\d+)"', client.get(desk + query).content.decode())}

    assert ids("?status=") == {world.match.pk, second.pk}
    assert ids("?status=&verdict=exact") == {second.pk}
    assert ids(f"?status=&collection={world.collection.pk}") == {world.match.pk, second.pk}
    assert ids("?status=&date_from=2999-01-01") == set()
    assert ids("?status=confirmed") == set()
    assert ids("?status=&q=coffee") == {world.match.pk, second.pk}
    assert client.get(desk + "?date_from=2020-02-02&date_to=2020-01-01").status_code == 200  # told, not a 500


def test_evidence_export_for_confirmed_matches_only(world):
    owner = world.users[Role.OWNER]
    with pytest.raises(NotConfirmed):
        evidence_export(match=world.match, actor=owner)
    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.CONFIRM,
                 actor=world.users[Role.MEMBER], note="Clear copy")
    world.match.refresh_from_db()
    world.match.edit_report = {"scale": 0.75, "rotation_deg": 7.2, "mirrored": True, "visible_fraction": 0.62,
                               "query_coverage": 1.0}
    world.match.save()
    name, data = evidence_export(match=world.match, actor=owner)
    assert name == f"imgprotect-evidence-match-{world.match.pk}.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {n.split("/", 1)[1]: archive.read(n) for n in archive.namelist()}
    assert set(files) == {"suspect.jpg", "protected.png", "evidence.png", "report.json", "report.txt", "SHA256SUMS"}
    assert files["suspect.jpg"] == world.check.file.open("rb").read()
    assert files["protected.png"] == world.image.file.open("rb").read()
    sums = dict(reversed(line.split("  ")) for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    assert all(hashlib.sha256(files[n]).hexdigest() == d for n, d in sums.items())
    report = json.loads(files["report.json"])
    assert report["confirmed"]["by"]["username"] == "member-user" and report["confirmed"]["note"] == "Clear copy"
    assert report["files"]["protected.png"]["sha256"] == world.image.sha256_bytes
    assert report["suspect"]["sha256_bytes"] == world.check.sha256_bytes
    assert report["match"]["signal_scores"]["phash_distance"] == 2
    assert report["match"]["edit_report_in_words"] == \
        "Cropped to 62 % of the original, scaled to 75 %, rotated 7°, mirrored."
    text = files["report.txt"].decode()
    assert "Confirmed by:   member-user" in text and world.image.sha256_bytes in text and "rotated 7°" in text
    assert [e["action"] for e in report["audit_trail"]] == ["confirmed"]
    assert ReviewEvent.objects.filter(match=world.match, action="exported", actor=owner).exists()


def test_export_view(world):
    client = world.client(Role.MEMBER)
    url = reverse("portal:match-export", args=["acme", world.match.pk])
    response = client.post(url, follow=True)
    assert "confirmed infringements only" in response.content.decode()
    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.CONFIRM,
                 actor=world.users[Role.MEMBER])
    response = client.post(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith("attachment;")
    assert zipfile.ZipFile(io.BytesIO(response.content)).testzip() is None


def test_finding_01_export_is_sandboxed_and_names_files_from_their_decoded_format(world, settings):
    from pathlib import Path

    # A suspect stored before names came from the decoded format kept the uploader's extension.
    old = Path(settings.MEDIA_ROOT) / world.check.file.name
    old.rename(old.with_suffix(".html"))
    type(world.check).objects.filter(pk=world.check.pk).update(file=world.check.file.name.rsplit(".", 1)[0] + ".html")
    match_review(organisation=world.org, match_ids=[world.match.pk], decision=Decision.CONFIRM,
                 actor=world.users[Role.MEMBER])
    response = world.client(Role.MEMBER).post(reverse("portal:match-export", args=["acme", world.match.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["X-Content-Type-Options"] == "nosniff" and "sandbox" in response["Content-Security-Policy"]
    names = sorted(name.split("/", 1)[1] for name in zipfile.ZipFile(io.BytesIO(response.content)).namelist())
    assert names == ["SHA256SUMS", "evidence.png", "protected.png", "report.json", "report.txt", "suspect.jpg"]


def test_match_page_degrades_without_geometry_and_shows_it_when_present(world):
    client = world.client(Role.VIEWER)
    url = reverse("portal:match", args=["acme", world.match.pk])
    page = client.get(url).content.decode()
    assert "svg class=\"outline\"" not in page and "Found by its hashes" in page
    assert 'data-review-panel' not in page  # a viewer cannot decide
    world.match.region = {"query": [[1, 2], [50, 2], [50, 40], [1, 40]],
                          "reference": [[0, 0], [100, 0], [100, 80], [0, 80]]}
    world.match.edit_report = {"description": "Cropped to 62 % of the original, rotated 7°, mirrored, recoloured",
                               "scale": 0.5}
    world.match.save()
    page = client.get(url).content.decode()
    assert page.count('svg class="outline"') == 2 and 'points="1.0,2.0 50.0,2.0 50.0,40.0 1.0,40.0"' in page
    assert "Cropped to 62 % of the original, rotated 7°, mirrored, recoloured." in page
    world.match.region = {"query": [[1, "x"]], "reference": "garbage"}
    world.match.save()
    assert client.get(url).status_code == 200  # malformed evidence is not drawn, never a 500
    assert 'data-review-panel' in world.client(Role.MEMBER).get(url).content.decode()


def test_scan_matches_without_a_stored_suspect(world):
    scan_match = Match.objects.create(organisation=world.org, protected_image=world.image, score=0.9,
                                      verdict="near_duplicate", suspect_key="s3://crawl/2025/11/img-7.jpg")
    page = world.client(Role.VIEWER).get(reverse("portal:match", args=["acme", scan_match.pk])).content.decode()
    assert "found by a scan" in page and "s3://crawl/2025/11/img-7.jpg" in page
    match_review(organisation=world.org, match_ids=[scan_match.pk], decision=Decision.DISMISS, actor=None)
    again = Match.objects.create(organisation=world.org, protected_image=world.image, score=0.9,
                                 verdict="near_duplicate", suspect_key="s3://crawl/2025/11/img-7.jpg")
    review_auto_resolve(matches=[again])
    assert again.review_status == "dismissed"
