"""Names are single-line (catalog/validators.py), in every service that takes one."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from catalog import services
from catalog.models import ApiKey, Collection, Organisation
from catalog.validators import one_line, single_line


def test_finding_14_one_line_makes_header_text_safe():
    assert one_line("[imgprotect] 1 new match in Logos\r\nBcc: x@y.z\x00 \u2028end") == \
        "[imgprotect] 1 new match in Logos Bcc: x@y.z end"
    single_line("Product shots – 2026 (ünïcode)")  # ordinary text passes
    with pytest.raises(ValidationError):
        single_line("two\nlines")


@pytest.mark.django_db
def test_finding_14_services_refuse_names_with_line_breaks(org):
    with pytest.raises(ValidationError) as info:
        services.collection_create(organisation=org, name="Logos\nx")
    assert "name" in info.value.message_dict
    collection = services.collection_create(organisation=org, name="Logos")
    with pytest.raises(ValidationError):
        services.collection_update(collection=collection, name="Logos\r\nx")
    with pytest.raises(ValidationError):
        services.api_key_create(organisation=org, name="ci\nkey")
    with pytest.raises(ValidationError):
        services.organisation_create(slug="beta", name="Beta\nInc")
    assert Collection.objects.get().name == "Logos"
    assert not ApiKey.objects.exists() and not Organisation.objects.filter(slug="beta").exists()
