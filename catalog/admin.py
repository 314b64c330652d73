import json

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from catalog import receipts, services
from catalog.models import ApiKey, Collection, DeletionReceipt, Invitation, Membership, Organisation, ProtectedImage
from catalog.validators import single_line


class SingleLineNameForm(forms.ModelForm):
    """Names are single-line here too (catalog/validators.py)."""

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        single_line(name)
        return name


def image_thumbnail(url: str, size: int = 64) -> str:
    return format_html('<img src="{}" style="max-width:{}px;max-height:{}px" alt="">', url, size, size)


def receipt_response(request) -> HttpResponse | None:
    """After one deletion in the admin, show its receipt (a bulk deletion lists them in the receipts' list)."""
    made = getattr(request, "_deletion_receipts", [])
    if len(made) != 1:
        return None
    messages.success(request, f"Deleted; this is its signed deletion receipt ({made[0].uuid}).")
    return HttpResponseRedirect(reverse("admin:catalog_deletionreceipt_change", args=[made[0].pk]))


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    form = SingleLineNameForm
    list_display = ["slug", "name", "created", "index_generation", "suspect_retention_days"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    readonly_fields = ["index_generation"]

    def delete_model(self, request, obj):
        request._deletion_receipts = [services.organisation_delete(organisation=obj, actor=receipts.actor_of(request))]

    def delete_queryset(self, request, queryset):
        actor = receipts.actor_of(request)
        request._deletion_receipts = [services.organisation_delete(organisation=organisation, actor=actor)
                                      for organisation in queryset]

    def response_delete(self, request, obj_display, obj_id):
        return receipt_response(request) or super().response_delete(request, obj_display, obj_id)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organisation", "role", "created"]
    list_filter = ["role", "organisation"]
    search_fields = ["user__username", "user__email", "organisation__slug"]
    autocomplete_fields = ["user", "organisation"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = SingleLineNameForm
    list_display = ["name", "prefix", "organisation", "role", "created", "last_used", "revoked"]
    list_filter = ["role", "organisation", ("revoked", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "organisation__slug"]
    readonly_fields = ["prefix", "hashed_secret", "created", "last_used", "revoked", "revoked_reason", "created_by"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # keys are created through the API/portal so the secret is shown once

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.api_key_revoke(key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    form = SingleLineNameForm
    list_display = ["name", "slug", "organisation", "alert_emails", "created"]
    list_filter = ["organisation"]
    search_fields = ["name", "slug", "organisation__slug"]
    prepopulated_fields = {"slug": ["name"]}

    def delete_model(self, request, obj):
        request._deletion_receipts = [services.collection_delete(collection=obj, actor=receipts.actor_of(request))]

    def delete_queryset(self, request, queryset):
        actor = receipts.actor_of(request)
        request._deletion_receipts = [services.collection_delete(collection=collection, actor=actor)
                                      for collection in queryset]

    def response_delete(self, request, obj_display, obj_id):
        return receipt_response(request) or super().response_delete(request, obj_display, obj_id)


@admin.register(ProtectedImage)
class ProtectedImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "key", "collection", "organisation", "status", "width", "height", "format", "created"]
    list_filter = ["status", "format", "organisation", "collection", "embedding_model"]
    search_fields = ["key", "sha256_bytes", "sha256_pixels"]
    readonly_fields = ["preview", "sha256_bytes", "sha256_pixels", "width", "height", "format", "size_bytes",
                       "signals", "phash", "status", "failure_reason", "indexed_at", "created", "file",
                       "protection_flags", "keypoint_count", "embedding_model"]
    list_select_related = ["collection", "organisation"]

    def has_add_permission(self, request):
        return False  # uploads go through the service, which validates and indexes

    @admin.display(description="")
    def thumbnail(self, obj: ProtectedImage) -> str:
        return image_thumbnail(reverse("admin-image-file", args=["catalog", obj.pk]))

    @admin.display(description="Image")
    def preview(self, obj: ProtectedImage) -> str:
        return image_thumbnail(reverse("admin-image-file", args=["catalog", obj.pk]), 400)

    def delete_model(self, request, obj):
        request._deletion_receipts = [services.protected_image_delete(image=obj, actor=receipts.actor_of(request))]

    def delete_queryset(self, request, queryset):
        actor = receipts.actor_of(request)
        request._deletion_receipts = [services.protected_image_delete(image=image, actor=actor) for image in queryset]

    def response_delete(self, request, obj_display, obj_id):
        return receipt_response(request) or super().response_delete(request, obj_display, obj_id)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organisation", "role", "invited_by", "created", "expires", "accepted", "revoked"]
    list_filter = ["organisation", "role"]
    exclude = ["token_hash"]


@admin.register(DeletionReceipt)
class DeletionReceiptAdmin(admin.ModelAdmin):
    """Read-only: a receipt is written by a deletion and never changed (its signature would break)."""

    list_display = ["created", "kind", "subject_label", "organisation_name", "organisation_id", "deleted_by_label",
                    "download"]
    list_filter = ["kind", "created"]
    search_fields = ["subject_label", "organisation_slug", "organisation_name", "deleted_by_label", "uuid"]
    readonly_fields = ["uuid", "kind", "organisation_id", "organisation_slug", "organisation_name", "subject_id",
                       "subject_label", "deleted_by", "deleted_by_label", "created", "key_id", "signature",
                       "verification", "download", "receipt_json"]
    exclude = ["body"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        download = self.admin_site.admin_view(self.download_view)
        return [path("<int:pk>/download/", download, name="catalog_deletionreceipt_download"), *super().get_urls()]

    def download_view(self, request, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        receipt = get_object_or_404(DeletionReceipt, pk=pk)
        return receipts.receipt_download(receipt)

    @admin.display(description="Download")
    def download(self, obj: DeletionReceipt) -> str:
        return format_html('<a href="{}">JSON</a>', reverse("admin:catalog_deletionreceipt_download", args=[obj.pk]))

    @admin.display(description="Signature")
    def verification(self, obj: DeletionReceipt) -> str:
        verdict = str(receipts.receipt_verify(receipts.receipt_document(obj)))
        return verdict[:1].upper() + verdict[1:]

    @admin.display(description="Receipt")
    def receipt_json(self, obj: DeletionReceipt) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.body, indent=2, ensure_ascii=False))

