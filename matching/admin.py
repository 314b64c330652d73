from django.contrib import admin
from django.urls import reverse

from catalog.admin import image_thumbnail
from matching.models import Check, Match


class MatchInline(admin.TabularInline):
    model = Match
    extra = 0
    fields = ["protected_image", "verdict", "score", "signal_scores", "created"]
    readonly_fields = fields
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

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
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
    list_filter = ["verdict", "review_status", "organisation", "created"]
    search_fields = ["protected_image__key", "source_check__original_name"]
    readonly_fields = ["evidence_image", "source_check", "suspect_key", "organisation", "protected_image", "score",
                       "verdict", "signal_scores", "region", "edit_report", "review_status", "reviewed_by", "reviewed",
                       "created", "alerted", "suspect", "reference"]
    exclude = ["evidence"]
    list_select_related = ["source_check", "protected_image", "organisation"]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
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
        return image_thumbnail(reverse("admin-image-file", args=["catalog", obj.protected_image_id]))
