"""The demo set-up that README's first command runs."""
import io

import pytest
from django.core.management import call_command

from catalog.models import ApiKey, ProtectedImage

pytestmark = pytest.mark.django_db


def test_seed_demo_is_complete_and_idempotent():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert "login:        demo / demo-imgprotect" in text and "API key:      ipk_" in text
    indexed = ProtectedImage.objects.filter(organisation__slug="demo", status="indexed").count()
    assert indexed == 14
    again = io.StringIO()
    call_command("seed_demo", stdout=again)
    assert ProtectedImage.objects.count() == indexed and "0 new" in again.getvalue()
    assert ApiKey.objects.filter(organisation__slug="demo").count() == 1
