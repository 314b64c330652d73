from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from catalog import services
from catalog.models import ApiKey, Collection, Invitation, Membership, Organisation, ProtectedImage
from catalog.validators import single_line


class SingleLineNameForm(forms.ModelForm):
    """Names are single-line here too (catalog/validators.py)."""

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        single_line(name)
        return name


def image_thumbnail(url: str, size: int = 64) -> str:
    return format_html('<img src="{}" style="max-width:{}px;max-height:{}px" alt="">', url, size, size)


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
        services.organisation_delete(organisation=obj)

    def delete_queryset(self, request, queryset):
        for organisation in queryset:
            services.organisation_delete(organisation=organisation)


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
        services.collection_delete(collection=obj)

    def delete_queryset(self, request, queryset):
        for collection in queryset:
            services.collection_delete(collection=collection)


@admin.register(ProtectedImage)
class ProtectedImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "key", "collection", "organisation", "status", "width", "height", "format", "created"]
    list_filter = ["status", "format", "organisation", "collection"]
    search_fields = ["key", "sha256_bytes", "sha256_pixels"]
    readonly_fields = ["preview", "sha256_bytes", "sha256_pixels", "width", "height", "format", "size_bytes",
                       "signals", "phash", "status", "failure_reason", "indexed_at", "created", "file",
                       "protection_flags", "keypoint_count"]
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
        services.protected_image_delete(image=obj)

    def delete_queryset(self, request, queryset):
        for image in queryset:
            services.protected_image_delete(image=image)


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organisation", "role", "invited_by", "created", "expires", "accepted", "revoked"]
    list_filter = ["organisation", "role"]
    exclude = ["token_hash"]
