"""REST API for the caller's protected images: upload (decoded and indexed by the matching engine), list,
get, delete, the stored file and the protection self-test. The routes are ``/api/v1/images/``
(imgprotect/urls.py)."""
from __future__ import annotations

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema
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
from catalog.receipts import actor_of
from catalog.receipts_api import DELETION_SCHEMA, deletion_response
from imgprotect.api import IsoDateTimeFilter
from imgprotect.errors import NotFound
from imgprotect.schema import ErrorSerializer
from matching import protection, selftest
from matching.cnn import embedding_model
from matching.models import SelfTest, Verdict
from matching.uploads import read_and_validate


class ProtectionFlagSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=["tiny", "flat", "few_features", "near_duplicate"])
    reason = serializers.CharField()
    image_id = serializers.IntegerField(required=False, help_text="near_duplicate only: the other image's id.")


class ProtectedImageSerializer(serializers.ModelSerializer):
    collection_slug = serializers.CharField(source="collection.slug", read_only=True)
    file_url = serializers.SerializerMethodField()
    protection_flags = ProtectionFlagSerializer(
        many=True, read_only=True,
        help_text="Why copies of this image may go unfound (docs/self-test.md); empty when nothing was found "
                  "wrong. Pixels-only flags (tiny, flat) are set at upload, the rest once indexed.")
    mark = serializers.JSONField(
        source="mark_info", read_only=True, allow_null=True,
        help_text="The mark extracted from the picture when it is a logo on a flat background or has "
                  "transparency: its box [x0, y0, x1, y1] in the picture's pixels and its source "
                  "(\"alpha\" or \"background\"); checks also look for the mark alone. Null without one.")

    cnn_searched = serializers.SerializerMethodField(
        help_text="Whether checks' CNN stage searches for this image: it is indexed with vectors of the "
                  "service's current network. False: only digests, hashes and local features find its copies "
                  "until the operator runs `manage.py reembed` (a new CNN head since it was indexed, or the CNN "
                  "was off then). Null when the service runs without the CNN.")

    class Meta:
        model = ProtectedImage
        fields = [
            "id", "collection", "collection_slug", "key", "status", "failure_reason", "width", "height", "format",
            "size_bytes", "sha256_bytes", "sha256_pixels", "signals", "mark", "created", "indexed_at", "file_url",
            "protection_flags", "keypoint_count", "cnn_searched",
        ]
        read_only_fields = fields

    def get_file_url(self, obj: ProtectedImage) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/images/{obj.pk}/file/")

    def get_cnn_searched(self, obj: ProtectedImage) -> bool | None:
        if not hasattr(self, "_model"):  # once per response (a list's rows share this serializer)
            self._model = embedding_model()
        return protection.cnn_searched(obj, self._model) if self._model is not None else None


class SelfTestEditSerializer(serializers.Serializer):
    edit = serializers.CharField(help_text="crop_60, crop_40, rotate_7, rotate_90, mirror, recolour, caption_bar, "
                                           "screenshot, collage, mark_in_photo (marks only).")
    # DRF's metaclass takes declared fields out of the class, so this never shadows Field.label; the stubs
    # cannot express that (as imgprotect/schema.py's ErrorSerializer.fields).
    label = serializers.CharField()  # type: ignore[assignment]
    found = serializers.BooleanField(help_text="The edited copy was matched to this image by the service's verdict.")
    rank = serializers.IntegerField(allow_null=True, help_text="This image's place among the candidates (1 = "
                                                               "first); null when it was not among them.")
    verdict = serializers.ChoiceField(choices=Verdict.choices)
    score = serializers.FloatField()
    partial_pass = serializers.BooleanField(help_text="The partial-copy pass ran for this copy.")
    outranked_by = serializers.IntegerField(allow_null=True, help_text="Another image matched ahead of this one.")
    elapsed_ms = serializers.FloatField()


class SelfTestResultsSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=["photo", "mark"], help_text="mark: a logo on a flat tile, which also "
                                                                        "gets the mark-in-a-photo edit.")
    edits = SelfTestEditSerializer(many=True)
    found = serializers.IntegerField()
    total = serializers.IntegerField()
    cnn = serializers.BooleanField()
    partial_search = serializers.ChoiceField(choices=["auto", "never"])
    conditions = serializers.DictField(help_text="The index generation and engine switches the result holds for: "
                                                 "a POST while they are unchanged returns this result again.")


class SelfTestSerializer(serializers.ModelSerializer):
    results = SelfTestResultsSerializer(read_only=True, allow_null=True)

    class Meta:
        model = SelfTest
        fields = ["id", "image", "status", "failure_reason", "results", "created", "started", "finished"]
        read_only_fields = fields


class ImageUploadSerializer(serializers.Serializer):
    collection = id_field(help_text="Id of one of your collections.")
    file = serializers.FileField(help_text="JPEG, PNG, WebP, GIF, BMP or TIFF.")
    key = serializers.CharField(required=False, max_length=1024,
                                help_text="Your identifier for the image; defaults to the file name.")


class ImageFilter(django_filters.FilterSet):
    collection = OwnObjectFilter(scope=own_collections, noun="collection")
    created_after = IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created", lookup_expr="lt")
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

    @extend_schema(summary="Delete a protected image; answers with the deletion receipt", **DELETION_SCHEMA)
    def destroy(self, request, *args, **kwargs):
        receipt = catalog_services.protected_image_delete(image=self.get_object(), actor=actor_of(request))
        return deletion_response(request, receipt)

    @extend_schema(methods=["GET"], responses={200: SelfTestSerializer},
                   summary="The image's latest protection self-test (404 before the first)")
    # 409 for the POST only (conflict_actions would give it to the GET of the same action too).
    @extend_schema(methods=["POST"], request=None, responses={
        202: SelfTestSerializer, 200: SelfTestSerializer,
        409: OpenApiResponse(ErrorSerializer, description="The image is not indexed (`not_indexed`)."),
    },
                   summary="Run the protection self-test: edited copies matched against the live index, "
                           "nothing written (200 when already finished, 202 while it runs)")
    @action(detail=True, methods=["get", "post"], url_path="self-test")
    def self_test(self, request, pk=None):
        image = self.get_object()
        if request.method == "POST":
            test = selftest.selftest_start(image=image, user=request.user)
            test.refresh_from_db()
            finished = test.status in (SelfTest.Status.DONE, SelfTest.Status.FAILED)
            return Response(SelfTestSerializer(test).data,
                            status=status.HTTP_200_OK if finished else status.HTTP_202_ACCEPTED)
        test = image.self_tests.order_by("-created", "-id").first()
        if test is None:
            raise NotFound("This image has not been self-tested yet: POST to this URL to run the test.")
        return Response(SelfTestSerializer(test).data)

    @extend_schema(responses={(200, "image/*"): bytes}, summary="The stored image file")
    @action(detail=True, methods=["get"])
    def file(self, request, pk=None):
        image = self.get_object()
        return file_response(image.file.open("rb"), image_format=image.format)
