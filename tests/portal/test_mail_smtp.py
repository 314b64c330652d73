"""Invitation and password-reset e-mails over a real SMTP server on loopback (aiosmtpd): the message
arrives for the right person, and its link completes the flow."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from catalog.models import Membership, Role
from tests.portal.servers import smtp_server


@pytest.fixture
def inbox(settings):  # type: ignore[no-untyped-def]
    with smtp_server() as inbox:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", inbox.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        yield inbox


def _link(message, pattern: str) -> str:  # type: ignore[no-untyped-def]
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(r"https?://\S+" + pattern, text)
    assert found, text
    return urlsplit(found.group(0)).path


def test_promise_an_invitation_email_over_smtp_lets_the_invitee_join(world, inbox,
                                                                    django_capture_on_commit_callbacks):
    admin = world.client(Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=True):  # the e-mail leaves on commit
        admin.post(reverse("portal:settings-invite", args=["acme"]),
                   {"email": "newcomer@example.com", "role": "member"})
    assert [rcpt for _, rcpt in inbox.envelopes] == [["newcomer@example.com"]]
    message = inbox.messages[0]
    assert message["To"] == "newcomer@example.com" and "Acme Images" in message["Subject"]
    path = _link(message, r"/invite/\S+/")
    visitor = Client()
    response = visitor.post(path, {"username": "newcomer", "password1": "a fine long password",
                                   "password2": "a fine long password"})
    assert response["Location"] == reverse("portal:dashboard", args=["acme"])
    assert Membership.objects.get(user__username="newcomer").role == "member"


def test_promise_a_password_reset_email_over_smtp_resets_the_password(world, inbox,
                                                                      django_capture_on_commit_callbacks):
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("portal:password-reset"), {"email": "viewer@acme.test"})
    assert [rcpt for _, rcpt in inbox.envelopes] == [["viewer@acme.test"]]
    message = inbox.messages[0]
    assert message["Subject"] == "[imgprotect] Choose a new password"
    form = client.get(_link(message, r"/password-reset/\S+/\S+/"), follow=True)
    assert "Choose a new password" in form.content.decode()
    response = client.post(form.redirect_chain[-1][0], {"new_password1": "brand new secret 99",
                                                        "new_password2": "brand new secret 99"})
    assert response["Location"] == reverse("portal:password-reset-complete")
    assert Client().login(username="viewer-user", password="brand new secret 99")
