"""REST API for the caller's protected images: upload (decoded and indexed by the matching engine), list,
get, delete, and the stored file. The routes are ``/api/v1/images/`` (imgprotect/urls.py)."""
from __future__ import annotations

import django_filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from catalog import selectors as catalog_selectors
from catalog import services as catalog_services
from catalog.api import collection_from_field
from catalog.files import file_response
from catalog.filters import IdLookupMixin, OwnObjectFilter, id_field, own_collections
from catalog.models import ProtectedImage
from catalog.permissions import request_tenant
from matching import protection
from matching.uploads import read_and_validate


class ProtectedImageSerializer(serializers.ModelSerializer):
    collection_slug = serializers.CharField(source="collection.slug", read_only=True)
    file_url = serializers.SerializerMethodField()
    mark = serializers.JSONField(
        source="mark_info", read_only=True, allow_null=True,
        help_text="The mark extracted from the picture when it is a logo on a flat background or has "
                  "transparency: its box [x0, y0, x1, y1] in the picture's pixels and its source "
                  "(\"alpha\" or \"background\"); checks also look for the mark alone. Null without one.")

    class Meta:
        model = ProtectedImage
        fields = [
            "id", "collection", "collection_slug", "key", "status", "failure_reason", "width", "height", "format",
            "size_bytes", "sha256_bytes", "sha256_pixels", "signals", "mark", "created", "indexed_at", "file_url",
        ]
        read_only_fields = fields

    def get_file_url(self, obj: ProtectedImage) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/images/{obj.pk}/file/")


class ImageUploadSerializer(serializers.Serializer):
    collection = id_field(help_text="Id of one of your collections.")
    file = serializers.FileField(help_text="JPEG, PNG, WebP, GIF, BMP or TIFF.")
    key = serializers.CharField(required=False, max_length=1024,
                                help_text="Your identifier for the image; defaults to the file name.")


class ImageFilter(django_filters.FilterSet):
    collection = OwnObjectFilter(scope=own_collections, noun="collection")
    created_after = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt")
    key = django_filters.CharFilter(field_name="key", lookup_expr="icontains")

    class Meta:
        model = ProtectedImage
        fields = ["collection", "status", "format", "key", "created_after", "created_before"]


class ProtectedImageViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                            viewsets.GenericViewSet):
    queryset = ProtectedImage.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = ProtectedImageSerializer
    filterset_class = ImageFilter
    parser_classes = [MultiPartParser, FormParser]
    conflict_actions = {"create"}  # a duplicate key or picture (documented 409: imgprotect/schema.py)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return ProtectedImage.objects.none()
        return catalog_selectors.image_list(organisation=request_tenant(self.request).organisation)

    @extend_schema(request=ImageUploadSerializer, responses={201: ProtectedImageSerializer},
                   summary="Upload a protected image (multipart)")
    def create(self, request):
        form = ImageUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        organisation = request_tenant(request).organisation
        collection = collection_from_field(organisation=organisation, collection_id=form.validated_data["collection"])
        upload = form.validated_data["file"]
        data, loaded = read_and_validate(upload)
        image = protection.protected_image_add(
            collection=collection, key=form.validated_data.get("key") or upload.name, data=data, loaded=loaded,
            filename=upload.name,
        )
        image.refresh_from_db()
        return Response(self.get_serializer(image).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        catalog_services.protected_image_delete(image=instance)

    @extend_schema(responses={(200, "image/*"): bytes}, summary="The stored image file")
    @action(detail=True, methods=["get"])
    def file(self, request, pk=None):
        image = self.get_object()
        return file_response(image.file.open("rb"), image_format=image.format)
