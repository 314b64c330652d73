"""Cases in the portal: the list, a case's page, status changes, the evidence package, escaping."""
from __future__ import annotations

import io
import zipfile

from django.urls import reverse

from catalog.models import Role
from matching.cases import cases_attach
from matching.models import Case, CaseEvent, CheckOrigin, Match
from tests.portal.conftest import record_check, small_jpeg

HOSTILE = "https://<script>alert(1)</script>.example/<img src=x onerror=alert(2)>"


def in_case(world, source: str, quality: int = 60) -> Match:  # type: ignore[no-untyped-def]
    check = record_check(world.org, small_jpeg("coffee", 130, quality), [world.image], name=f"s{quality}.jpg")
    CheckOrigin.objects.create(source_check=check, source=source)
    match = Match.objects.get(source_check=check)
    cases_attach(matches=[match])
    match.refresh_from_db()
    return match


def test_cases_list_filters_sorts_and_says_what_has_no_case(world):
    big = [in_case(world, f"https://copycat.example/{n}.jpg", 60 + n) for n in range(3)]
    small = in_case(world, "https://other.example/x.jpg", 70)  # the latest match
    Case.objects.filter(pk=small.case_id).update(status="resolved")
    viewer = world.client(Role.VIEWER)
    url = reverse("portal:cases", args=["acme"])
    page = viewer.get(url).content.decode()
    assert page.index("other.example") < page.index("copycat.example")  # latest match first
    by_count = viewer.get(url + "?sort=matches").content.decode()
    assert by_count.index("copycat.example") < by_count.index("other.example")
    open_only = viewer.get(url + "?status=open").content.decode()
    assert "copycat.example" in open_only and "other.example" not in open_only
    # world.match was found with no "found at": it belongs to no case, and the page says so
    assert "1 match belongs to no case" in page
    assert viewer.get(url + "?status=bogus&sort=bogus").status_code == 200  # bad filters: ignored, no 500
    assert Match.objects.get(pk=big[0].pk).case_id == big[2].case_id


def test_case_page_lists_matches_with_review_state_and_escapes_hostile_sources(world):
    match = in_case(world, HOSTILE)
    case = Case.objects.get(pk=match.case_id)
    assert case.source == "<script>alert(1)<"  # as found; shown escaped everywhere
    for url in (reverse("portal:case", args=["acme", case.pk]), reverse("portal:cases", args=["acme"]),
                reverse("portal:match", args=["acme", match.pk])):
        page = world.client(Role.VIEWER).get(url).content.decode()
        assert "<script>alert(1)" not in page and "<img src=x" not in page, url
        assert "&lt;script&gt;alert(1)" in page, url
    page = world.client(Role.VIEWER).get(reverse("portal:case", args=["acme", case.pk])).content.decode()
    assert f'data-id="{match.pk}" data-status="new"' in page and "onerror=alert(2)&gt;" in page
    assert "data-case-update" not in page  # a viewer reads, a member decides


def test_member_changes_the_status_with_a_note_and_reviews_the_cases_matches(world):
    match = in_case(world, "https://copycat.example/a.jpg")
    case = Case.objects.get(pk=match.case_id)
    member = world.client(Role.MEMBER)
    url = reverse("portal:case", args=["acme", case.pk])
    page = member.get(url).content.decode()
    assert "data-case-update" in page and 'value="copycat.example"' in page  # the licence source, prefilled
    response = member.post(reverse("portal:case-update", args=["acme", case.pk]),
                           {"status": "notice_sent", "note": "Sent to abuse@", "assignee": world.users[Role.MEMBER].pk})
    assert response.status_code == 302 and response["Location"] == url
    case.refresh_from_db()
    assert (case.status, case.assignee) == ("notice_sent", world.users[Role.MEMBER])
    event = CaseEvent.objects.filter(case=case, action="status").get()
    assert (event.actor, event.note, event.from_status, event.to_status) == (
        world.users[Role.MEMBER], "Sent to abuse@", "open", "notice_sent")
    page = member.get(url).content.decode()
    assert "Open → Notice sent" in page and "Sent to abuse@" in page
    # refused input: a message, no change
    member.post(reverse("portal:case-update", args=["acme", case.pk]), {"status": "closed"})
    member.post(reverse("portal:case-update", args=["acme", case.pk]),
                {"status": "notice_sent", "assignee": world.users["rival"].pk})
    case.refresh_from_db()
    assert (case.status, case.assignee) == ("notice_sent", world.users[Role.MEMBER])
    # bulk review from the case page goes back to it
    response = member.post(reverse("portal:desk-bulk", args=["acme"]),
                           {"ids": [match.pk], "decision": "confirm", "next": url})
    assert response["Location"] == url and Match.objects.get(pk=match.pk).review_status == "confirmed"


def test_export_downloads_the_case_package(world):
    match = in_case(world, "https://copycat.example/a.jpg")
    response = world.client(Role.MEMBER).post(reverse("portal:case-export", args=["acme", match.case_id]))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert f'filename="imgprotect-evidence-case-{match.case_id}.zip"' in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        summary = archive.read(f"case-{match.case_id}/SUMMARY.txt").decode()
    assert "copycat.example" in summary and "https://copycat.example/a.jpg" in summary


def test_another_organisations_case_is_not_found(world):
    match = in_case(world, "https://copycat.example/a.jpg")
    rival = world.client("rival")
    for name in ("case", "case-update", "case-export"):
        url = reverse(f"portal:{name}", args=["rival", match.case_id])
        response = rival.get(url) if name == "case" else rival.post(url, {"status": "resolved"})
        assert response.status_code == 404, name
    assert Case.objects.get(pk=match.case_id).status == "open"
