"""Security review finding 5: rate limits on logins, password resets and the API (imgprotect/ratelimit.py).

tests/conftest.py raises every limit and empties the cache for each test; these tests set them low.
"""
from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from catalog.models import Role
from tests.conftest import client_for
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

PASSWORD = "pw-secret-123"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):  # type: ignore[no-untyped-def]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _login(client: Client, username: str, password: str):  # type: ignore[no-untyped-def]
    return client.post(reverse("portal:login"), {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_finding_05_login_lockout(db, settings):  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 5
    MembershipFactory(user=UserFactory(username="victim", email="victim@example.com"))
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    answers = [_login(attacker, "victim", f"guess-{n}").status_code for n in range(40)]
    assert answers[:4] == [200] * 4 and set(answers[5:]) == {429}  # the form again, then the lockout page
    # The right password no longer logs in from there: a clear page, with Retry-After.
    response = _login(attacker, "victim", PASSWORD)
    assert response.status_code == 429 and not _logged_in(attacker)
    assert int(response["Retry-After"]) == 15 * 60
    assert "Too many failed logins" in response.content.decode()
    # The lock is on this user name from this address: the owner elsewhere still gets in.
    owner = Client(REMOTE_ADDR="198.51.100.20")
    assert _login(owner, "victim", PASSWORD).status_code == 302 and _logged_in(owner)


def test_finding_05_login_success_resets_the_count(db, settings):  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 3
    UserFactory(username="typo", email="typo@example.com")
    client = Client(REMOTE_ADDR="203.0.113.8")
    for _ in range(2):
        assert _login(client, "typo", "wrong").status_code == 200
    assert _login(client, "typo", PASSWORD).status_code == 302
    client.logout()
    for _ in range(2):
        assert _login(client, "typo", "wrong").status_code == 200
    assert _login(client, "typo", PASSWORD).status_code == 302


def test_finding_05_login_attempts_per_address(db, settings):  # type: ignore[no-untyped-def]
    """Password spraying: one address trying many user names is cut off whatever the names."""
    settings.IMGPROTECT_LOGIN_RATE_PER_IP = "5/hour"
    UserFactory(username="alice", email="alice@example.com")
    sprayer = Client(REMOTE_ADDR="203.0.113.9")
    answers = [_login(sprayer, f"user{n}", "Password1").status_code for n in range(6)]
    assert answers == [200] * 5 + [429]
    response = _login(sprayer, "alice", PASSWORD)
    assert response.status_code == 429 and not _logged_in(sprayer) and 0 < int(response["Retry-After"]) <= 3600
    assert _login(Client(REMOTE_ADDR="198.51.100.21"), "alice", PASSWORD).status_code == 302


def test_finding_05_password_reset_throttled_per_address(db, settings):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_PASSWORD_RESET_RATE_PER_ADDRESS = "3/hour"
    UserFactory(username="target", email="target@example.com")
    UserFactory(username="bystander", email="bystander@example.com")
    url = reverse("portal:password-reset")
    answers = [Client(REMOTE_ADDR=f"203.0.113.{n}").post(url, {"email": "Target@example.com"}).status_code
               for n in range(20)]  # from many addresses, in any letter case
    assert answers == [302] * 3 + [429] * 17
    assert len(mail.outbox) == 3 and all(m.to == ["target@example.com"] for m in mail.outbox)
    blocked = Client().post(url, {"email": "target@example.com"})
    assert "Too many reset requests" in blocked.content.decode() and int(blocked["Retry-After"]) > 0
    assert Client().post(url, {"email": "bystander@example.com"}).status_code == 302
    assert len(mail.outbox) == 4


def test_finding_05_password_reset_throttled_per_ip(db, settings):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_PASSWORD_RESET_RATE_PER_IP = "4/hour"
    for n in range(6):
        UserFactory(username=f"u{n}", email=f"u{n}@example.com")
    client = Client(REMOTE_ADDR="203.0.113.50")
    answers = [client.post(reverse("portal:password-reset"), {"email": f"u{n}@example.com"}).status_code
               for n in range(6)]
    assert answers == [302] * 4 + [429] * 2 and len(mail.outbox) == 4


def test_finding_05_api_throttled_per_key(db, settings):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_API_RATE_PER_KEY = "3/minute"
    org = OrganisationFactory()
    first, second = client_for(org), client_for(org, Role.MEMBER)
    assert [first.get("/api/v1/collections/").status_code for _ in range(3)] == [200] * 3
    response = first.get("/api/v1/collections/")
    assert response.status_code == 429 and 0 < int(response["Retry-After"]) <= 60
    assert response.json()["error"] == "throttled" and "seconds" in response.json()["detail"]
    assert second.get("/api/v1/collections/").status_code == 200  # another key has its own budget


def test_finding_05_api_throttled_per_ip(db, settings):  # type: ignore[no-untyped-def]
    settings.IMGPROTECT_API_RATE_PER_IP = "4/minute"
    org = OrganisationFactory()
    keys = [client_for(org) for _ in range(5)]  # fresh keys cannot dodge the per-address limit
    answers = [client.get("/api/v1/collections/", REMOTE_ADDR="203.0.113.60").status_code for client in keys]
    assert answers == [200] * 4 + [429]
    assert keys[4].get("/api/v1/collections/", REMOTE_ADDR="198.51.100.60").status_code == 200


def test_client_address_behind_trusted_proxies(rf, settings):  # type: ignore[no-untyped-def]
    from imgprotect.ratelimit import client_ip

    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")
    settings.IMGPROTECT_TRUSTED_PROXIES = 0
    assert client_ip(request) == "10.0.0.2"  # X-Forwarded-For is not trusted by default
    settings.IMGPROTECT_TRUSTED_PROXIES = 1
    assert client_ip(request) == "203.0.113.5"  # what our proxy saw, not what the client claimed


def test_rates_are_checked_at_start_up(monkeypatch):  # type: ignore[no-untyped-def]
    from imgprotect.env import ConfigError, cache_from_url, env_rate

    monkeypatch.setenv("X_RATE", "10/fortnight")
    with pytest.raises(ConfigError, match="X_RATE"):
        env_rate("X_RATE", "1/s")
    monkeypatch.setenv("X_RATE", "10/min")
    assert env_rate("X_RATE", "1/s") == "10/min"
    assert cache_from_url("redis://cache:6379/1")["BACKEND"].endswith("RedisCache")
    with pytest.raises(ConfigError, match="memcached"):
        cache_from_url("memcached://cache:11211")
