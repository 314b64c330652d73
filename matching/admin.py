from django.contrib import admin
from django.db.models import Count
from django.urls import reverse

from catalog.admin import image_thumbnail
from matching.models import (Case, CaseEvent, Check, DismissedPair, HashList, HashListEntry, Licence, Match,
                             ReviewEvent, SelfTest, SuspectSignals, Webhook, WebhookDelivery)


_MATCH_INLINE_FIELDS = ("protected_image", "verdict", "score", "signal_scores", "created")


class MatchInline(admin.TabularInline):
    model = Match
    extra = 0
    fields = _MATCH_INLINE_FIELDS
    readonly_fields = _MATCH_INLINE_FIELDS
    can_delete = False


@admin.register(Check)
class CheckAdmin(admin.ModelAdmin):
    list_display = ["id", "thumbnail", "organisation", "original_name", "status", "verdict", "partial_search",
                    "created", "finished"]
    list_filter = ["status", "partial_search", "organisation", "created"]
    search_fields = ["original_name", "sha256_bytes"]
    readonly_fields = ["preview", "organisation", "collection", "file", "original_name", "sha256_bytes", "status",
                       "failure_code", "failure_reason", "result", "submitted_by", "api_key", "attempts",
                       "created", "started", "finished", "partial_search", "partial_started", "completed"]
    inlines = [MatchInline]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Verdict")
    def verdict(self, obj: Check) -> str:
        return (obj.result or {}).get("verdict", "—")

    @admin.display(description="")
    def thumbnail(self, obj: Check) -> str:
        return image_thumbnail(reverse("admin-image-file", args=["check", obj.pk]))

    @admin.display(description="Image")
    def preview(self, obj: Check) -> str:
        return image_thumbnail(reverse("admin-image-file", args=["check", obj.pk]), 400)


@admin.register(Match)
class MatchAdmin(admin.ModelAdmin):
    list_display = ["id", "suspect", "reference", "verdict", "score", "review_status", "organisation", "created",
                    "alerted"]
    list_filter = ["verdict", "review_status", "found_retroactively", "organisation", "created"]
    search_fields = ["protected_image__key", "source_check__original_name"]
    readonly_fields = ["evidence_image", "source_check", "suspect_key", "organisation", "protected_image",
                       "hash_list_entry", "score",
                       "verdict", "signal_scores", "region", "edit_report", "review_status", "reviewed_by", "reviewed",
                       "created", "alerted", "found_retroactively", "suspect", "reference"]
    exclude = ["evidence"]
    list_select_related = ["source_check", "protected_image", "organisation"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Evidence")
    def evidence_image(self, obj: Match) -> str:
        if not obj.evidence:
            return "—"
        return image_thumbnail(reverse("admin-image-file", args=["evidence", obj.pk]), 900)

    @admin.display(description="Suspect")
    def suspect(self, obj: Match) -> str:
        if obj.source_check_id is None:
            return obj.suspect_key  # found by a bulk scan: the crawled key
        return image_thumbnail(reverse("admin-image-file", args=["check", obj.source_check_id]))

    @admin.display(description="Protected image")
    def reference(self, obj: Match) -> str:
        if obj.protected_image_id is None:
            return f"hash list entry {obj.hash_list_entry_id}"
        return image_thumbnail(reverse("admin-image-file", args=["catalog", obj.protected_image_id]))


@admin.register(HashList)
class HashListAdmin(admin.ModelAdmin):
    list_display = ["name", "organisation", "created"]
    list_filter = ["organisation"]
    search_fields = ["name"]
    readonly_fields = ["organisation", "created_by", "created"]


@admin.register(HashListEntry)
class HashListEntryAdmin(admin.ModelAdmin):
    list_display = ["pdq", "label", "hash_list"]
    search_fields = ["pdq", "label"]
    raw_id_fields = ["hash_list"]


# --- review decisions and webhooks: read-mostly views for support staff ---------------------

@admin.register(ReviewEvent)
class ReviewEventAdmin(admin.ModelAdmin):
    list_display = ["created", "organisation", "match", "action", "from_status", "to_status", "actor"]
    list_filter = ["action", "organisation"]
    readonly_fields = [f.name for f in ReviewEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
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


_DELIVERY_INLINE_FIELDS = ("event", "status", "attempts", "status_code", "error", "next_retry", "created")


class DeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    fields = _DELIVERY_INLINE_FIELDS
    readonly_fields = _DELIVERY_INLINE_FIELDS
    can_delete = False
    ordering = ["-created"]


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "organisation", "active", "created"]
    list_filter = ["active", "organisation"]
    exclude = ["secret"]
    inlines = [DeliveryInline]


@admin.register(SelfTest)
class SelfTestAdmin(admin.ModelAdmin):
    """Read-only: self-tests are run from the portal or the API (matching/selftest.py)."""

    list_display = ["id", "image", "organisation", "status", "found", "created", "finished"]
    list_filter = ["status", "organisation", "created"]
    search_fields = ["image__key"]
    readonly_fields = ["organisation", "image", "status", "failure_reason", "results", "requested_by", "created",
                       "started", "finished"]
    list_select_related = ["image", "organisation"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Found")
    def found(self, obj: SelfTest) -> str:
        return f"{obj.results['found']} / {obj.results['total']}" if obj.results else "—"


@admin.register(SuspectSignals)
class SuspectSignalsAdmin(admin.ModelAdmin):
    """Read-only: written by checks and scans, deleted by the retention purge (matching/suspects.py)."""

    list_display = ["id", "organisation", "source_check", "suspect_key", "pdq_quality", "has_embedding", "created"]
    list_filter = ["organisation", "created"]
    search_fields = ["suspect_key", "sha256_bytes", "sha256_pixels"]
    readonly_fields = fields = ("organisation", "source_check", "suspect_key", "collection", "sha256_bytes",
                                "sha256_pixels", "pdq_quality", "width", "height", "created")
    list_select_related = ["organisation"]

    @admin.display(boolean=True, description="CNN embedding")
    def has_embedding(self, obj: SuspectSignals) -> bool:
        return obj.embedding is not None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# --- cases: read-only for support staff; status changes go through the portal or the API, into the history ---

_CASE_EVENT_FIELDS = ("created", "action", "from_status", "to_status", "actor", "note")


class CaseEventInline(admin.TabularInline):
    model = CaseEvent
    extra = 0
    fields = _CASE_EVENT_FIELDS
    readonly_fields = _CASE_EVENT_FIELDS
    can_delete = False


class CaseMatchInline(MatchInline):
    fields = ("protected_image", "verdict", "score", "review_status", "created")
    readonly_fields = fields
    fk_name = "case"


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["id", "source", "kind", "status", "organisation", "assignee", "matches_count", "last_match"]
    list_filter = ["status", "kind", "organisation"]
    search_fields = ["source"]
    readonly_fields = ["organisation", "kind", "source", "status", "assignee", "created", "updated", "last_match"]
    inlines = [CaseMatchInline, CaseEventInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(match_total=Count("matches"))

    def has_add_permission(self, request):
        return False

    @admin.display(description="Matches", ordering="match_total")
    def matches_count(self, obj: Case) -> int:
        return getattr(obj, "match_total", 0)
