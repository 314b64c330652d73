"""The cases API (/api/v1/cases/): list and filter, retrieve with history, PATCH, matches, evidence;
tenant-scoped and in the API's error shape."""
from __future__ import annotations

import io
import zipfile

import pytest

from catalog.models import Role
from matching.models import Case
from tests.conftest import client_for
from tests.portal.conftest import world  # noqa: F401
from tests.portal.test_cases import in_case


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def cases(world):  # type: ignore[no-untyped-def]
    copycat = [in_case(world, f"https://www.copycat.example/{n}.jpg", 60 + n) for n in range(2)]
    other = in_case(world, "https://other.example/x.jpg", 70)
    Case.objects.filter(pk=other.case_id).update(status="resolved")
    return {"copycat": copycat[0].case_id, "other": other.case_id, "match": copycat[0].pk}


def test_list_filter_and_sort(world, cases):
    api = client_for(world.org, Role.VIEWER)
    body = api.get("/api/v1/cases/").json()
    assert [c["source"] for c in body["results"]] == ["other.example", "copycat.example"]  # latest first
    first = body["results"][1]
    assert (first["kind"], first["status"], first["match_count"], first["to_review"]) == ("site", "open", 2, 2)
    assert [c["source"] for c in api.get("/api/v1/cases/?sort=matches").json()["results"]] == [
        "copycat.example", "other.example"]
    assert [c["id"] for c in api.get("/api/v1/cases/?status=open").json()["results"]] == [cases["copycat"]]
    assert api.get("/api/v1/cases/?status=open&status=resolved").json()["count"] == 2
    bad = api.get("/api/v1/cases/?status=closed")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid"
    bad = api.get("/api/v1/cases/?sort=oldest")
    assert bad.status_code == 400 and "sort" in bad.json()["fields"]


def test_patch_changes_status_with_a_note_into_the_history(world, cases):
    api = client_for(world.org, Role.MEMBER)
    url = f"/api/v1/cases/{cases['copycat']}/"
    response = api.patch(url, {"status": "notice_sent", "note": "Notice #42 sent"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "notice_sent"
    assert body["history"][-1] | {"created": None} == {"action": "status", "from_status": "open",
                                                        "to_status": "notice_sent", "actor": None,
                                                        "note": "Notice #42 sent", "created": None}
    member = world.users[Role.MEMBER]
    body = api.patch(url, {"assignee": member.pk}, format="json").json()
    assert (body["assignee"], body["assignee_username"]) == (member.pk, "member-user")
    body = api.patch(url, {"assignee": None}, format="json").json()
    assert body["assignee"] is None and body["history"][-1]["note"] == "Assigned to nobody."
    # what the case already is changes nothing: 200, no event
    for same in ({"status": "notice_sent"}, {}, {"note": "  "}, {"assignee": None}):
        assert api.patch(url, same, format="json").json()["history"] == body["history"], same
    for payload, field in [({"status": "closed"}, "status"), ({"assignee": world.users["rival"].pk}, "assignee"),
                           ({"status": 3}, "status"), ({"assignee": "x"}, "assignee"), ([1], None)]:
        bad = api.patch(url, payload, format="json")
        assert bad.status_code == 400, payload
        assert bad.json()["error"] == "invalid" and (field is None or field in bad.json()["fields"]), bad.json()
    assert api.put(url, {"status": "resolved"}, format="json").status_code == 405
    viewer = client_for(world.org, Role.VIEWER).patch(url, {"status": "resolved"}, format="json")
    assert viewer.status_code == 403
    assert Case.objects.get(pk=cases["copycat"]).status == "notice_sent"


def test_matches_and_evidence(world, cases):
    api = client_for(world.org, Role.MEMBER)
    matches = api.get(f"/api/v1/cases/{cases['copycat']}/matches/").json()
    assert matches["count"] == 2 and cases["match"] in [m["id"] for m in matches["results"]]
    assert all(m["review_status"] == "new" and m["case"] == cases["copycat"] for m in matches["results"])
    assert client_for(world.org, Role.VIEWER).get(f"/api/v1/matches/{cases['match']}/").json()["case"] == \
        cases["copycat"]
    response = api.post(f"/api/v1/cases/{cases['copycat']}/evidence/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        names = archive.namelist()
        summary = archive.read(f"case-{cases['copycat']}/SUMMARY.txt").decode()
    assert f"case-{cases['copycat']}/match-{cases['match']}/report.txt" in names
    assert "copycat.example" in summary and "https://www.copycat.example/0.jpg" in summary
    assert client_for(world.org, Role.VIEWER).post(f"/api/v1/cases/{cases['copycat']}/evidence/").status_code == 403


def test_another_organisations_cases_answer_404(world, cases):
    intruder = client_for(world.rival, Role.OWNER)
    assert intruder.get("/api/v1/cases/").json()["count"] == 0
    case = cases["copycat"]
    for method, url in [("get", f"/api/v1/cases/{case}/"), ("patch", f"/api/v1/cases/{case}/"),
                        ("get", f"/api/v1/cases/{case}/matches/"), ("post", f"/api/v1/cases/{case}/evidence/"),
                        ("get", "/api/v1/cases/99999999/"), ("get", "/api/v1/cases/1e20/")]:
        response = getattr(intruder, method)(url, {"status": "resolved"}, format="json")
        assert response.status_code == 404, (method, url)
        assert response.json()["error"] == "not_found"
    assert Case.objects.get(pk=case).status == "open"
