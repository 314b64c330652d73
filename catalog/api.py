"""REST API for the caller's organisation, its collections and protected images."""
from __future__ import annotations

import django_filters
from django.http import FileResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors, services
from catalog.models import Collection, Organisation, ProtectedImage, Role, validate_email_list
from catalog.permissions import resolve_tenant
from catalog.uploads import read_and_validate
from catalog.validators import single_line


class OrganisationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organisation
        fields = ["id", "slug", "name", "created", "role"]

    def get_role(self, obj: Organisation) -> str:
        return resolve_tenant(self.context["request"]).role


class OrganisationView(APIView):
    @extend_schema(responses=OrganisationSerializer, summary="The caller's organisation and role")
    def get(self, request):  # type: ignore[no-untyped-def]
        tenant = resolve_tenant(request)
        return Response(OrganisationSerializer(tenant.organisation, context={"request": request}).data)


class CollectionSerializer(serializers.ModelSerializer):
    image_count = serializers.IntegerField(read_only=True)
    slug = serializers.SlugField(required=False, max_length=100)
    alert_emails = serializers.CharField(required=False, allow_blank=True, validators=[validate_email_list])

    class Meta:
        model = Collection
        fields = ["id", "slug", "name", "description", "alert_emails", "phash_max_distance", "image_count", "created"]
        read_only_fields = ["id", "created", "image_count"]
        extra_kwargs = {"phash_max_distance": {"min_value": 0, "max_value": 64},
                        "name": {"validators": [single_line]}}


class CollectionViewSet(viewsets.ModelViewSet):
    serializer_class = CollectionSerializer
    write_roles = {"create": Role.ADMIN, "update": Role.ADMIN, "partial_update": Role.ADMIN, "destroy": Role.ADMIN}

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return selectors.collection_list(organisation=resolve_tenant(self.request).organisation)

    def perform_create(self, serializer):  # type: ignore[no-untyped-def]
        serializer.instance = services.collection_create(
            organisation=resolve_tenant(self.request).organisation, **serializer.validated_data
        )
        serializer.instance.image_count = 0

    def perform_update(self, serializer):  # type: ignore[no-untyped-def]
        services.collection_update(collection=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):  # type: ignore[no-untyped-def]
        services.collection_delete(collection=instance)


class ProtectedImageSerializer(serializers.ModelSerializer):
    collection_slug = serializers.CharField(source="collection.slug", read_only=True)
    file_url = serializers.SerializerMethodField()

    class Meta:
        model = ProtectedImage
        fields = [
            "id", "collection", "collection_slug", "key", "status", "failure_reason", "width", "height", "format",
            "size_bytes", "sha256_bytes", "sha256_pixels", "signals", "created", "indexed_at", "file_url",
        ]
        read_only_fields = fields

    def get_file_url(self, obj: ProtectedImage) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/images/{obj.pk}/file/")


class ImageUploadSerializer(serializers.Serializer):
    collection = serializers.IntegerField(help_text="Id of one of your collections.")
    file = serializers.FileField(help_text="JPEG, PNG, WebP, GIF, BMP or TIFF.")
    key = serializers.CharField(required=False, max_length=1024,
                                help_text="Your identifier for the image; defaults to the file name.")


class ImageFilter(django_filters.FilterSet):
    created_after = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt")
    key = django_filters.CharFilter(field_name="key", lookup_expr="icontains")

    class Meta:
        model = ProtectedImage
        fields = ["collection", "status", "format", "key", "created_after", "created_before"]


class ProtectedImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                            viewsets.GenericViewSet):
    serializer_class = ProtectedImageSerializer
    filterset_class = ImageFilter
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return selectors.image_list(organisation=resolve_tenant(self.request).organisation)

    @extend_schema(request=ImageUploadSerializer, responses={201: ProtectedImageSerializer},
                   summary="Upload a protected image (multipart)")
    def create(self, request):  # type: ignore[no-untyped-def]
        form = ImageUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        organisation = resolve_tenant(request).organisation
        collection = selectors.collection_get(organisation=organisation, collection_id=form.validated_data["collection"])
        if collection is None:
            raise serializers.ValidationError({"collection": ["No such collection in your organisation."]})
        upload = form.validated_data["file"]
        data, loaded = read_and_validate(upload)
        image = services.protected_image_add(
            collection=collection, key=form.validated_data.get("key") or upload.name, data=data, loaded=loaded,
            filename=upload.name,
        )
        image.refresh_from_db()
        return Response(self.get_serializer(image).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):  # type: ignore[no-untyped-def]
        services.protected_image_delete(image=instance)

    @extend_schema(responses={(200, "image/*"): bytes}, summary="The stored image file")
    @action(detail=True, methods=["get"])
    def file(self, request, pk=None):  # type: ignore[no-untyped-def]
        image = self.get_object()
        return FileResponse(image.file.open("rb"), content_type=f"image/{image.format.lower()}")
