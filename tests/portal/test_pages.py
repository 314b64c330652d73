"""Portal pages and actions behind the browser: uploads with per-file errors, checks, files,
members and invitations, password reset, "new since your last visit", and the evidence wording."""
from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from catalog.models import DeletionReceipt, Invitation, Membership, ProtectedImage, Role
from matching.models import Check, CheckOrigin, Match
from matching.portal.models import PortalVisit
from matching.portal.presentation import describe_edit_report, outlines, signal_rows
from tests.images import png_declaring, truncated_jpeg
from tests.portal.conftest import PASSWORD, record_check, small_jpeg, small_png


def upload(client, collection_id: int, *files, json: bool = True):  # type: ignore[no-untyped-def]
    headers = {"HTTP_ACCEPT": "application/json"} if json else {}
    return client.post(reverse("portal:collection-upload", args=["acme", collection_id]), {"file": list(files)},
                       **headers)


def test_upload_reports_each_file_and_keeps_nothing_from_failures(world, settings, media_files):
    client = world.client(Role.MEMBER)
    before = media_files()
    settings.IMGPROTECT_MAX_UPLOAD_BYTES = 200_000
    response = upload(client, world.collection.pk,
                      SimpleUploadedFile("new.png", small_png("rocket")),
                      SimpleUploadedFile("broken.jpg", truncated_jpeg()),
                      SimpleUploadedFile("again.png", world.image.file.open("rb").read()),
                      SimpleUploadedFile("notes.txt", b"just some text, not an image"),
                      SimpleUploadedFile("huge.png", b"\x89PNG" + b"\0" * 200_001),
                      SimpleUploadedFile("bomb.png", png_declaring(20_000, 20_000)))
    assert response.status_code == 200  # some added, some not
    results = {r["name"]: r for r in response.json()["results"]}
    assert results["new.png"]["ok"] and results["new.png"]["thumb"].endswith("?size=thumb")
    assert {n: r.get("code") for n, r in results.items() if not r["ok"]} == {
        "broken.jpg": "corrupt_image", "again.png": "duplicate_image", "notes.txt": "unsupported_format",
        "huge.png": "file_too_large", "bomb.png": "too_many_pixels"}
    assert "already protected" in results["again.png"]["message"]
    assert all(r["message"] for r in results.values() if not r["ok"])
    assert set(ProtectedImage.objects.values_list("key", flat=True)) == {"coffee.png", "new.png"}
    assert len(media_files()) == len(before) + 1
    single = upload(client, world.collection.pk, SimpleUploadedFile("x.jpg", truncated_jpeg()))
    assert single.status_code == 400
    assert upload(client, world.collection.pk).json()["results"][0]["code"] == "no_file"


def test_upload_without_javascript_redirects_with_messages(world):
    client = world.client(Role.MEMBER)
    response = upload(client, world.collection.pk, SimpleUploadedFile("ok.png", small_png("rocket")),
                      SimpleUploadedFile("bad.jpg", truncated_jpeg()), json=False)
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "1 image added." in page and "bad.jpg: The JPEG image is truncated or corrupt" in page


def test_deleting_an_image(world, media_files, django_capture_on_commit_callbacks):
    client = world.client(Role.MEMBER)
    url = reverse("portal:image-delete", args=["acme", world.image.pk])
    assert "cannot be undone" in client.get(url).content.decode()
    stored = world.image.file.name
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    receipt = DeletionReceipt.objects.get(subject_id=world.image.pk)  # shown next (tests/portal/test_receipts.py)
    assert response["Location"] == reverse("portal:receipt", args=["acme", receipt.pk])
    assert not ProtectedImage.objects.filter(pk=world.image.pk).exists()
    assert not any(str(p).endswith(stored) for p in media_files())


def test_image_files_are_served_after_the_tenant_check(world):
    client = world.client(Role.VIEWER)
    original = client.get(reverse("portal:image-file", args=["acme", world.image.pk]))
    assert original.status_code == 200 and original["Content-Type"] == "image/png"
    assert b"".join(original.streaming_content) == world.image.file.open("rb").read()
    assert original["Cache-Control"] == "private, max-age=3600"
    thumb = client.get(reverse("portal:image-file", args=["acme", world.image.pk]) + "?size=thumb")
    assert thumb["Content-Type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) <= 360
    suspect = client.get(reverse("portal:check-file", args=["acme", world.check.pk]))
    assert b"".join(suspect.streaming_content) == world.check.file.open("rb").read()
    evidence = client.get(reverse("portal:match-evidence", args=["acme", world.match.pk]))
    assert evidence["Content-Type"] == "image/png"
    # no public media path exists
    assert Client().get("/media/" + world.image.file.name).status_code == 404
    assert client.get("/media/" + world.image.file.name).status_code == 404


def test_the_image_page_shows_the_mark_extracted_from_a_transparent_logo(world, settings):
    """Indexing a logo uploaded as an RGBA PNG keeps its transparency as the mark's mask; the page
    shows the mark, served after the tenant check; a photo has none (matching/core/marks.py)."""
    import numpy as np

    from matching import protection
    from matching.core.loading import load_image
    from tests.images import drawn_logo, encode

    settings.IMGPROTECT_CNN_ENABLED = False  # the mark needs no CNN; its views' vectors do
    rgba = np.asarray(drawn_logo().convert("RGBA")).copy()
    rgba[(rgba[..., :3] > 250).all(axis=2), 3] = 0
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    image = protection.protected_image_add(collection=world.collection, key="acme-logo.png", data=data,
                                           loaded=load_image(data))
    protection.protected_image_index(image_id=image.pk)
    image.refresh_from_db()
    assert image.status == ProtectedImage.Status.INDEXED and image.mark and image.mark_info["source"] == "alpha"
    client = world.client(Role.VIEWER)
    page = client.get(reverse("portal:image", args=["acme", image.pk])).content.decode()
    mark_url = reverse("portal:image-mark", args=["acme", image.pk])
    assert "Extracted mark" in page and f'src="{mark_url}"' in page and "transparency" in page
    served = client.get(mark_url)
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    mask = Image.open(io.BytesIO(b"".join(served.streaming_content))).getchannel("A")
    assert mask.getextrema() == (0, 255)
    assert world.client("rival").get(reverse("portal:image-mark", args=["rival", image.pk])).status_code == 404
    photo_page = client.get(reverse("portal:image", args=["acme", world.image.pk])).content.decode()
    assert "Extracted mark" not in photo_page
    assert client.get(reverse("portal:image-mark", args=["acme", world.image.pk])).status_code == 404


def test_the_image_page_says_when_the_cnn_does_not_search_for_the_image_yet(world):
    """An image whose vectors another network made (a new CNN head since it was indexed) is found by
    its hashes only until ``reembed`` runs: the page says so, and no longer says nothing is wrong."""
    from matching import protection
    from matching.core.loading import load_image
    from tests.images import photo_png

    data = photo_png("rocket")
    image = protection.protected_image_add(collection=world.collection, key="rocket-cnn.png", data=data,
                                           loaded=load_image(data), index_now=True)
    client = world.client(Role.VIEWER)
    url = reverse("portal:image", args=["acme", image.pk])
    assert protection.cnn_searched(image) is True
    assert "not searched by the CNN yet" not in client.get(url).content.decode()
    ProtectedImage.objects.filter(pk=image.pk).update(embedding_model="0123456789abcdef-57934424")
    page = client.get(url).content.decode()
    assert "not searched by the CNN yet" in page and "manage.py reembed" in page
    assert "No protection problem found" not in page


@pytest.mark.django_db(transaction=True)
def test_portal_check_records_where_it_was_found(monkeypatch):
    """Through the view: JSON for the page's script, and the origin stored before matching runs."""
    from catalog import services
    from tests.factories import UserFactory

    org = services.organisation_create(slug="acme", name="Acme")
    member = UserFactory()
    Membership.objects.create(user=member, organisation=org, role=Role.MEMBER)
    client = Client()
    client.force_login(member)
    origins_when_matching: list[str] = []

    def matcher(*, check_id: int):  # type: ignore[no-untyped-def]
        # stands in for the engine (tested elsewhere): what matters is what it can see when it runs
        origins_when_matching.extend(CheckOrigin.objects.filter(source_check_id=check_id)
                                     .values_list("source", flat=True))
        Check.objects.filter(pk=check_id).update(status="done", result={"verdict": "none", "candidates": []})

    monkeypatch.setattr("matching.services.check_run", matcher)
    response = client.post(reverse("portal:check-create", args=["acme"]),
                           {"file": SimpleUploadedFile("found.jpg", small_jpeg("coffee")),
                            "found_at": "https://copycat.example/p/1"}, HTTP_ACCEPT="application/json")
    assert response.status_code == 201
    body = response.json()
    check = Check.objects.get(pk=body["id"])
    assert body["url"] == reverse("portal:check", args=["acme", check.pk])
    assert origins_when_matching == ["https://copycat.example/p/1"] and check.submitted_by == member
    bad = client.post(reverse("portal:check-create", args=["acme"]),
                      {"file": SimpleUploadedFile("bad.jpg", truncated_jpeg())}, HTTP_ACCEPT="application/json")
    assert bad.status_code == 400 and "corrupt" in bad.json()["message"]
    assert Check.objects.count() == 1
    partial = client.get(body["url"] + "?partial=1").content.decode()
    assert 'data-finished="true"' in partial and "<html" not in partial


def test_check_page_shows_the_verdict(world):
    client = world.client(Role.VIEWER)
    page = client.get(reverse("portal:check", args=["acme", world.check.pk])).content.decode()
    assert 'data-verdict="near_duplicate"' in page and "coffee.png" in page
    nothing = record_check(world.org, small_jpeg("rocket"), [], name="unrelated.jpg")
    page = client.get(reverse("portal:check", args=["acme", nothing.pk])).content.decode()
    assert 'data-verdict="none"' in page and "does not copy any of your protected images" in page
    pending = record_check(world.org, small_jpeg("horse"), [], name="slow.jpg")
    Check.objects.filter(pk=pending.pk).update(status="running")
    page = client.get(reverse("portal:check", args=["acme", pending.pk])).content.decode()
    assert 'data-finished="false"' in page and "data-poll=" in page
    Check.objects.filter(pk=pending.pk).update(status="failed", failure_reason="The image is corrupt.")
    page = client.get(reverse("portal:check", args=["acme", pending.pk])).content.decode()
    assert "could not be checked" in page and "The image is corrupt." in page


def test_check_page_shows_the_answer_and_keeps_polling_while_partial_copies_are_looked_for(world):
    client = world.client(Role.VIEWER)
    check = record_check(world.org, small_jpeg("horse"), [], name="answered.jpg")
    Check.objects.filter(pk=check.pk).update(partial_search="pending")
    url = reverse("portal:check", args=["acme", check.pk])
    page = client.get(url).content.decode()
    assert 'data-verdict="none"' in page and "partial copies: still looking" in page
    assert "data-partial-pending" in page and 'data-finished="false"' in page and "data-poll=" in page
    listing = client.get(reverse("portal:checks", args=["acme"])).content.decode()
    assert "partial copies…" in listing
    Check.objects.filter(pk=check.pk).update(partial_search="done")
    page = client.get(url).content.decode()
    assert "data-partial-pending" not in page and 'data-finished="true"' in page and "data-poll=" not in page
    Check.objects.filter(pk=check.pk).update(partial_search="failed")
    assert "could not finish" in client.get(url).content.decode()


def test_collections_search_and_paging(world):
    from catalog.services import collection_create

    for n in range(14):
        collection_create(organisation=world.org, name=f"Campaign {n:02d}")
    client = world.client(Role.VIEWER)
    url = reverse("portal:collections", args=["acme"])
    first = client.get(url).content.decode()
    assert first.count("data-collection=") == 12 and "Page 1 of 2" in first
    assert client.get(url + "?page=2").content.decode().count("data-collection=") == 3
    found = client.get(url + "?q=campaign 07").content.decode()
    assert found.count("data-collection=") == 1 and "Campaign 07" in found
    assert "No collection matches" in client.get(url + "?q=zzz").content.decode()


def test_collection_create_edit_delete(world):
    client = world.client(Role.ADMIN)
    response = client.post(reverse("portal:collection-create", args=["acme"]), {"name": "Press kit"})
    created = world.org.collections.get(name="Press kit")
    assert response["Location"] == reverse("portal:collection", args=["acme", created.pk])
    assert client.post(reverse("portal:collection-create", args=["acme"]), {"name": ""}).status_code == 400
    client.post(reverse("portal:collection-edit", args=["acme", created.pk]), {"name": "Press kit 2025"})
    created.refresh_from_db()
    assert created.name == "Press kit 2025"
    client.post(reverse("portal:collection-delete", args=["acme", created.pk]))
    assert not world.org.collections.filter(pk=created.pk).exists()


def test_alert_and_threshold_settings(world):
    client = world.client(Role.ADMIN)
    url = reverse("portal:settings-alerts-save", args=["acme", world.collection.pk])
    prefix = f"c{world.collection.pk}-"
    client.post(url, {prefix + "alert_emails": "a@acme.test, b@acme.test", prefix + "alert_frequency": "daily"})
    world.collection.refresh_from_db()
    assert (world.collection.alert_emails, world.collection.alert_frequency) == ("a@acme.test, b@acme.test", "daily")
    response = client.post(url, {prefix + "alert_emails": "not-an-address", prefix + "alert_frequency": "hourly"},
                           follow=True)
    assert "not a valid e-mail address" in response.content.decode()
    world.collection.refresh_from_db()
    assert world.collection.alert_frequency == "daily"
    t_url = reverse("portal:settings-thresholds-save", args=["acme", world.collection.pk])
    client.post(t_url, {prefix + "phash_max_distance": "5"})
    world.collection.refresh_from_db()
    assert world.collection.phash_max_distance == 5
    client.post(t_url, {prefix + "phash_max_distance": "99"})
    client.post(t_url, {prefix + "phash_max_distance": "-1"})
    world.collection.refresh_from_db()
    assert world.collection.phash_max_distance == 5
    client.post(t_url, {prefix + "phash_max_distance": ""})
    world.collection.refresh_from_db()
    assert world.collection.phash_max_distance is None


def test_api_key_secret_is_shown_once_and_revocable(world):
    client = world.client(Role.ADMIN)
    url = reverse("portal:settings-api-keys", args=["acme"])
    page = client.post(url, {"name": "CI", "role": "member"}).content.decode()
    secret = re.search(r'id="new-secret">(ipk_[^<]+)<', page).group(1)
    assert secret not in client.get(url).content.decode()
    api = Client(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert api.get("/api/v1/organisation/").json()["slug"] == "acme"
    key = world.org.api_keys.get(name="CI")
    client.post(reverse("portal:settings-api-key-revoke", args=["acme", key.pk]))
    assert api.get("/api/v1/organisation/").status_code in (401, 403)
    assert client.post(url, {"name": "", "role": "member"}).status_code == 400
    assert client.post(url, {"name": "x", "role": "owner"}).status_code == 400  # keys cannot be owners


def test_invitation_by_email_then_signup(world, django_capture_on_commit_callbacks):
    admin = world.client(Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("portal:settings-invite", args=["acme"]),
                              {"email": "Newcomer@Example.com", "role": "member"}, follow=True)
    assert "Invitation sent to newcomer@example.com" in response.content.decode()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["newcomer@example.com"]
    message = mail.outbox[0]
    link = re.search(r"https?://\S+/invite/\S+/", message.body).group(0)
    assert message.alternatives and link in message.alternatives[0][0]
    path = link.split("testserver")[-1] if "testserver" in link else "/" + link.split("/", 3)[3]
    visitor = Client()
    assert "Join Acme Images" in visitor.get(path).content.decode()
    bad = visitor.post(path, {"username": "newcomer", "password1": "short", "password2": "short"})
    assert bad.status_code == 400 and not Membership.objects.filter(user__username="newcomer").exists()
    response = visitor.post(path, {"username": "newcomer", "password1": "a fine long password",
                                   "password2": "a fine long password"})
    assert response["Location"] == reverse("portal:dashboard", args=["acme"])
    membership = Membership.objects.get(user__username="newcomer")
    assert membership.role == "member" and membership.user.email == "newcomer@example.com"
    assert visitor.get(reverse("portal:dashboard", args=["acme"])).status_code == 200
    assert Client().get(path).status_code == 404  # used once


def test_invitation_rules(world):
    admin = world.client(Role.ADMIN)
    invite = reverse("portal:settings-invite", args=["acme"])
    assert admin.post(invite, {"email": "boss@example.com", "role": "owner"}).status_code == 403
    response = admin.post(invite, {"email": "not an address", "role": "member"}, follow=True)
    assert "Enter a valid email address" in response.content.decode()
    response = admin.post(invite, {"email": "viewer@acme.test", "role": "member"}, follow=True)
    assert "already a member" in response.content.decode()
    assert world.client(Role.OWNER).post(invite, {"email": "boss@example.com", "role": "owner"}).status_code == 302
    # an existing user accepts while logged in; an expired or withdrawn link is refused
    from catalog.services import invitation_create, invitation_revoke

    issued = invitation_create(organisation=world.org, email="Owner@Rival.test", role="viewer",
                               invited_by=world.users[Role.OWNER], actor_role=Role.OWNER)
    rival = world.client("rival")
    assert rival.post(reverse("portal:invitation", args=[issued.token])).status_code == 302
    assert Membership.objects.get(user=world.users["rival"], organisation=world.org).role == "viewer"
    late = invitation_create(organisation=world.org, email="late@example.com", role="viewer",
                             invited_by=world.users[Role.OWNER], actor_role=Role.OWNER)
    Invitation.objects.filter(pk=late.invitation.pk).update(expires=timezone.now() - timedelta(minutes=1))
    assert Client().get(reverse("portal:invitation", args=[late.token])).status_code == 404
    withdrawn = invitation_create(organisation=world.org, email="gone@example.com", role="viewer",
                                  invited_by=world.users[Role.OWNER], actor_role=Role.OWNER)
    invitation_revoke(invitation=withdrawn.invitation)
    assert Client().get(reverse("portal:invitation", args=[withdrawn.token])).status_code == 404


def test_member_roles_and_the_last_owner(world):
    admin, owner = world.client(Role.ADMIN), world.client(Role.OWNER)
    viewer_m = Membership.objects.get(user=world.users[Role.VIEWER], organisation=world.org)
    owner_m = Membership.objects.get(user=world.users[Role.OWNER], organisation=world.org)
    role_url = lambda m: reverse("portal:settings-member-role", args=["acme", m.pk])  # noqa: E731
    admin.post(role_url(viewer_m), {"role": "member"})
    viewer_m.refresh_from_db()
    assert viewer_m.role == "member"
    assert admin.post(role_url(viewer_m), {"role": "owner"}).status_code == 403
    assert admin.post(role_url(owner_m), {"role": "viewer"}).status_code == 403
    assert admin.post(reverse("portal:settings-member-remove", args=["acme", owner_m.pk])).status_code == 403
    response = owner.post(role_url(owner_m), {"role": "admin"}, follow=True)
    assert "at least one owner" in response.content.decode()
    owner.post(role_url(viewer_m), {"role": "owner"})
    owner.post(role_url(owner_m), {"role": "admin"})
    owner_m.refresh_from_db()
    assert owner_m.role == "admin"


def test_password_reset_by_email(world, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = Client()
    response = client.post(reverse("portal:password-reset"), {"email": "viewer@acme.test"})
    assert response["Location"] == reverse("portal:password-reset-done")
    message = mail.outbox[-1]
    assert message.subject == "[imgprotect] Choose a new password" and message.alternatives
    link = re.search(r"http://testserver(/password-reset/\S+/\S+/)", message.body).group(1)
    form = client.get(link, follow=True)
    assert "Choose a new password" in form.content.decode()
    response = client.post(form.redirect_chain[-1][0], {"new_password1": "brand new secret 99",
                                                        "new_password2": "brand new secret 99"})
    assert response["Location"] == reverse("portal:password-reset-complete")
    assert Client().login(username="viewer-user", password="brand new secret 99")
    assert not Client().login(username="viewer-user", password=PASSWORD)
    client.post(reverse("portal:password-reset"), {"email": "nobody@nowhere.test"})
    assert len(mail.outbox) == 1  # no e-mail, and no hint that the address is unknown


def test_login_and_home(world):
    client = Client()
    response = client.post(reverse("portal:login"), {"username": "viewer-user", "password": PASSWORD})
    assert response["Location"] == "/"
    assert client.get("/")["Location"] == reverse("portal:dashboard", args=["acme"])
    loner = world.users["rival"]
    Membership.objects.filter(user=loner).delete()
    lonely = Client()
    lonely.force_login(loner)
    assert "not in an organisation yet" in lonely.get("/").content.decode()


def test_new_since_your_last_visit(world):
    PortalVisit.objects.create(user=world.users[Role.VIEWER], organisation=world.org,
                               last_seen=timezone.now() - timedelta(days=2))
    Match.objects.filter(pk=world.match.pk).update(created=timezone.now() - timedelta(days=3))
    record_check(world.org, small_jpeg("coffee", 140, 50), [world.image])
    client = world.client(Role.VIEWER)
    page = client.get(reverse("portal:dashboard", args=["acme"])).content.decode()
    assert re.search(r'data-stat="new-since">\s*<div class="value">1</div>', page)
    # the figure holds for the whole session, although the visit is now recorded
    assert PortalVisit.objects.get(user=world.users[Role.VIEWER]).last_seen > timezone.now() - timedelta(minutes=1)
    page = client.get(reverse("portal:dashboard", args=["acme"])).content.decode()
    assert re.search(r'data-stat="new-since">\s*<div class="value">1</div>', page)
    # a new session starts counting from the last visit
    page = world.client(Role.VIEWER).get(reverse("portal:dashboard", args=["acme"])).content.decode()
    assert re.search(r'data-stat="new-since">\s*<div class="value">0</div>', page)


def test_edit_report_in_words():
    assert describe_edit_report(None) == ""
    assert describe_edit_report({"description": "pasted into a poster"}) == "Pasted into a poster."
    assert describe_edit_report({"scale": 1.0, "rotation_deg": 0.2, "mirrored": False, "visible_fraction": 1.0,
                                 "query_coverage": 1.0}).startswith("No geometric change")
    assert describe_edit_report({"scale": 0.5, "rotation_deg": -7.4, "mirrored": True, "visible_fraction": 0.62,
                                 "query_coverage": 0.2}) == (
        "Cropped to 62 % of the original, scaled to 50 %, rotated -7°, mirrored, "
        "filling 20 % of the suspect picture.")
    assert describe_edit_report({"scale": "big", "rotation_deg": float("nan")}).startswith("No geometric")


def test_signal_rows_read_well():
    rows = {r.label: r for r in signal_rows({"sha256_bytes": False, "phash_distance": 6, "pdq_distance": 32,
                                             "cnn_score": 0.91, "inliers": 57, "odd_thing": 3, "exact": True,
                                             "pdq_variant_distance": 8,
                                             "verification": "too few inliers (3 < 12)"})}
    assert rows["Identical picture"].value == "yes"
    assert rows["PDQ, best flip or turn"].value == "8 of 256 bits"
    assert rows["Geometric check"].value == "too few inliers (3 < 12)"
    assert rows["Identical file"].value == "no"
    assert rows["pHash distance"].value == "6 of 64 bits" and rows["pHash distance"].fraction == pytest.approx(58 / 64)
    assert rows["PDQ distance"].value == "32 of 256 bits"
    assert rows["CNN similarity"].fraction == pytest.approx(0.91)
    assert rows["Matching local features"].value == "57 inliers"
    assert rows["Odd thing"].value == "3"


def test_outlines_need_sizes_and_sane_polygons(world):
    world.match.region = {"query": [[0, 0], [10, 0], [10, 10]], "reference": [[0, 0], [1, 1]]}
    query, reference = outlines(world.match)
    assert query is not None and query.points == "0.0,0.0 10.0,0.0 10.0,10.0" and reference is None
    assert (query.width, query.height) == (world.check.result["signals"]["width"],
                                           world.check.result["signals"]["height"])
    world.match.region = None
    assert outlines(world.match) == (None, None)


def test_a_stored_file_never_becomes_a_page(world):
    """The suspect is stored under its decoded format's extension and served as that image, sandboxed."""
    check = record_check(world.org, small_jpeg("rocket"), [], name="trick.html")
    assert check.file.name.endswith(".jpg") and check.original_name == "trick.html"
    response = world.client(Role.VIEWER).get(reverse("portal:check-file", args=["acme", check.pk]))
    assert response["Content-Type"] == "image/jpeg"
    assert "sandbox" in response["Content-Security-Policy"] and response["X-Content-Type-Options"] == "nosniff"


def test_finding_01_every_portal_file_response_is_typed_and_sandboxed(world):
    client = world.client(Role.VIEWER)
    urls = {"image/png": reverse("portal:image-file", args=["acme", world.image.pk]),
            "image/jpeg": reverse("portal:check-file", args=["acme", world.check.pk])}
    urls["image/jpeg "] = urls["image/png"] + "?size=thumb"  # a rendition is a stored picture too
    urls["image/png "] = reverse("portal:match-evidence", args=["acme", world.match.pk])
    for content_type, url in urls.items():
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == content_type.strip(), url
        assert response["X-Content-Type-Options"] == "nosniff", url
        assert "sandbox" in response["Content-Security-Policy"], url
        assert "default-src 'none'" in response["Content-Security-Policy"], url


def test_bulk_import_form_refuses_sources_outside_the_allowed_roots(world, settings, tmp_path):
    from matching.bulk.models import BulkJob

    settings.IMGPROTECT_SOURCE_ROOTS = f"acme={tmp_path / 'allowed'}"
    client = world.client("admin")
    url = f"/o/{world.org.slug}/collections/{world.collection.pk}/bulk/"
    response = client.post(url, {"source": "/etc"}, follow=True)
    assert response.status_code == 200 and BulkJob.objects.count() == 0
    errors = [str(m) for m in response.context["messages"] if m.level_tag == "error"]
    assert len(errors) == 1 and "/etc" in errors[0]
    page = client.get(f"/o/{world.org.slug}/collections/{world.collection.pk}/")
    assert b"Start a bulk import" in page.content


def test_finding_14_the_portal_refuses_names_with_line_breaks(world):
    from catalog.models import ApiKey, Collection

    client = world.client("admin")
    response = client.post(reverse("portal:collection-create", args=["acme"]), {"name": "Press\nkit"})
    assert response.status_code == 400 and "single line" in response.content.decode()
    response = client.post(reverse("portal:collection-edit", args=["acme", world.collection.pk]),
                           {"name": "Logos\r\nBcc: x@y.z"})
    assert response.status_code == 400
    assert Collection.objects.get(pk=world.collection.pk).name == "Logos"
    assert not Collection.objects.filter(name__contains="\n").exists()
    keys = ApiKey.objects.count()
    client.post(reverse("portal:settings-api-keys", args=["acme"]), {"name": "ci\nkey", "role": "member"})
    assert ApiKey.objects.count() == keys
