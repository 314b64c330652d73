"""The portal's rows in the Django admin, for support staff: read-mostly views."""
from django.contrib import admin

from matching.portal.models import DismissedPair, Invitation, Licence, ReviewEvent, Webhook, WebhookDelivery


@admin.register(ReviewEvent)
class ReviewEventAdmin(admin.ModelAdmin):
    list_display = ["created", "organisation", "match", "action", "from_status", "to_status", "actor"]
    list_filter = ["action", "organisation"]
    readonly_fields = [f.name for f in ReviewEvent._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False  # the audit trail is never edited


@admin.register(Licence)
class LicenceAdmin(admin.ModelAdmin):
    list_display = ["holder", "source", "protected_image", "organisation", "created", "revoked"]
    list_filter = ["organisation"]
    search_fields = ["holder", "source"]
    raw_id_fields = ["protected_image", "origin_match"]


@admin.register(DismissedPair)
class DismissedPairAdmin(admin.ModelAdmin):
    list_display = ["protected_image", "suspect_sha256", "suspect_key", "organisation", "dismissed_by", "created"]
    list_filter = ["organisation"]
    raw_id_fields = ["protected_image", "origin_match"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organisation", "role", "invited_by", "created", "expires", "accepted", "revoked"]
    list_filter = ["organisation", "role"]
    exclude = ["token_hash"]


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    fields = ["event", "status", "attempts", "status_code", "error", "next_retry", "created"]
    readonly_fields = fields
    can_delete = False
    ordering = ["-created"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "organisation", "active", "created"]
    list_filter = ["active", "organisation"]
    exclude = ["secret"]
    inlines = [DeliveryInline]
