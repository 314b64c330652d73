"""Model factories in one place (docs/coding-habits.md, habit 11)."""
from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from catalog import services
from catalog.models import Collection, Membership, Organisation, Role


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pw-secret-123")


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation

    slug = factory.Sequence(lambda n: f"org{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organisation = factory.SubFactory(OrganisationFactory)
    role = Role.MEMBER


class CollectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Collection

    organisation = factory.SubFactory(OrganisationFactory)
    slug = factory.Sequence(lambda n: f"collection-{n}")
    name = factory.LazyAttribute(lambda c: c.slug.replace("-", " ").title())
    alert_emails = "owner@example.com"


def api_key_for(organisation: Organisation, role: str = Role.ADMIN) -> str:
    return services.api_key_create(organisation=organisation, name=f"test-{role}", role=role).secret
