"""Create the demo organisation, login, API key and a collection of scikit-image's photos."""
from __future__ import annotations

import io
import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from catalog import services
from catalog.management.database import database_ready
from catalog.models import ApiKey, Organisation, ProtectedImage, Role
from matching.core.loading import load_image
from matching.protection import protected_image_add

# Photos bundled inside scikit-image's wheel (no download).
DEMO_PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
               "immunohistochemistry", "retina", "page", "moon", "text", "logo", "clock"]


def _photo_bytes(name: str) -> bytes:
    import numpy as np
    import skimage.data
    from PIL import Image

    pixels = getattr(skimage.data, name)()
    if pixels.dtype != np.uint8:
        pixels = (pixels > 0).astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


class Command(BaseCommand):
    help = "Idempotently set up demo data and print how to log in."

    def handle(self, *args, **opts):
        database_ready()
        username = os.environ.get("IMGPROTECT_DEMO_USER", "demo")
        password = os.environ.get("IMGPROTECT_DEMO_PASSWORD", "demo-imgprotect")
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=username, defaults={"email": "demo@example.com"})
            if created:
                user.set_password(password)
                user.is_staff = True
                user.is_superuser = True
                user.save()
            org = Organisation.objects.filter(slug="demo").first() or services.organisation_create(
                slug="demo", name="Demo Company", owner=user
            )
            services.membership_set(organisation=org, user=user, role=Role.OWNER)
        collection = services.collection_get_or_create(organisation=org, name="Demo photos")
        if not collection.alert_emails:
            services.collection_update(collection=collection, alert_emails="alerts@example.com")
        have = set(ProtectedImage.objects.filter(collection=collection).values_list("key", flat=True))
        added = 0
        for name in DEMO_PHOTOS:
            key = f"{name}.png"
            if key in have:
                continue
            data = _photo_bytes(name)
            protected_image_add(collection=collection, key=key, data=data, loaded=load_image(data), filename=key,
                                index_now=True)
            added += 1
        secret = None
        if not ApiKey.objects.filter(organisation=org, name="demo", revoked__isnull=True).exists():
            secret = services.api_key_create(organisation=org, name="demo", role=Role.OWNER, created_by=user).secret
        self.stdout.write(self.style.SUCCESS("imgprotect demo is ready"))
        self.stdout.write(f"  organisation: {org.slug}   collection: {collection.slug} "
                          f"({collection.images.count()} images, {added} new)")
        if created:
            self.stdout.write(f"  login:        {username} / {password}   (admin: /admin/, API docs: /api/docs/)")
        else:
            self.stdout.write(f"  login:        {username} (password unchanged)   (admin: /admin/, API docs: /api/docs/)")
        if secret:
            self.stdout.write(f"  API key:      {secret}")
            self.stdout.write("                (shown once; create more with manage.py create_api_key --org demo)")
