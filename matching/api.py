"""REST API for checks (submit a suspect image) and match reports."""
from __future__ import annotations

import time

import django_filters
from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from catalog.api import collection_from_field
from catalog.files import file_response
from catalog.filters import IdLookupMixin, OwnObjectFilter, id_field, own_collections
from catalog.permissions import request_tenant
from imgprotect.api import IsoDateTimeFilter, StrictBooleanFilter
from matching import selectors, services
from matching.models import Check, Match, Verdict
from matching.uploads import read_and_validate


class HashListHitSerializer(serializers.Serializer):
    id = serializers.IntegerField(source="hash_list.id", help_text="The hash list.")
    name = serializers.CharField(source="hash_list.name")
    entry_id = serializers.IntegerField(source="id")
    pdq = serializers.CharField()
    # DRF's metaclass takes declared fields out of the class, so this never shadows Field.label; the stubs
    # cannot express that.
    label = serializers.CharField()  # type: ignore[assignment]


class MatchSerializer(serializers.ModelSerializer):
    check_id = serializers.IntegerField(source="source_check_id", read_only=True)
    # Null for a hash-list match (verdict hash_list), which has no protected image: see hash_list.
    image_id = serializers.IntegerField(source="protected_image.id", read_only=True, allow_null=True)
    key = serializers.CharField(source="protected_image.key", read_only=True, allow_null=True)
    collection = serializers.IntegerField(source="protected_image.collection_id", read_only=True, allow_null=True)
    collection_slug = serializers.CharField(source="protected_image.collection.slug", read_only=True,
                                            allow_null=True)
    hash_list = HashListHitSerializer(source="hash_list_entry", read_only=True, allow_null=True,
                                      help_text="The hash-list entry the suspect's PDQ hash is close to "
                                                "(verdict hash_list; signal_scores has the distance).")
    evidence_url = serializers.SerializerMethodField()

    class Meta:
        model = Match
        fields = ["id", "check_id", "suspect_key", "image_id", "key", "collection", "collection_slug", "hash_list",
                  "score", "verdict", "signal_scores", "region", "edit_report", "evidence_url", "review_status",
                  "found_retroactively", "case", "created"]
        read_only_fields = fields

    def get_evidence_url(self, obj: Match) -> str | None:
        if not obj.evidence:
            return None
        return self.context["request"].build_absolute_uri(f"/api/v1/matches/{obj.pk}/evidence/")


class CheckSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    matches = MatchSerializer(many=True, read_only=True)

    class Meta:
        model = Check
        fields = ["id", "url", "status", "partial_search", "collection", "original_name", "sha256_bytes",
                  "failure_code", "failure_reason", "result", "matches", "created", "started", "finished",
                  "completed"]
        read_only_fields = fields

    def get_url(self, obj: Check) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/checks/{obj.pk}/")


class CheckSubmitSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The suspect image.")
    collection = id_field(required=False, help_text="Only match this collection.")


def own_checks(request):
    return selectors.check_list(organisation=request_tenant(request).organisation)


class CheckFilter(django_filters.FilterSet):
    collection = OwnObjectFilter(scope=own_collections, noun="collection")

    class Meta:
        model = Check
        fields = ["status", "collection"]


class CheckViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Check.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = CheckSerializer
    parser_classes = [MultiPartParser, FormParser]
    filterset_class = CheckFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return Check.objects.none()
        return selectors.check_list(organisation=request_tenant(self.request).organisation).prefetch_related(
            "matches__protected_image__collection", "matches__hash_list_entry__hash_list"
        )

    @extend_schema(
        request=CheckSubmitSerializer,
        parameters=[
            OpenApiParameter("wait", {"type": "number", "minimum": 0,
                                      "maximum": settings.IMGPROTECT_MAX_CHECK_WAIT_SECONDS},
                             description="Seconds to wait for the answer (then 200)."),
            OpenApiParameter("complete", bool, description=(
                "With wait: wait also for the partial-copy search (a logo pasted into the picture, a cropped "
                "corner), which runs after the answer when the picture holds no whole-frame copy.")),
        ],
        responses={202: CheckSerializer, 200: CheckSerializer},
        summary="Check a suspect image against your collections",
        description=(
            "The check answers once digests, hashes, the CNN on the whole picture and geometric verification "
            "are done (`status` `done`). When they found no copy, `partial_search` is `pending`, then `running`: "
            "the partial-copy pass looks for protected images inside parts of the picture and adds what it "
            "finds to the same check (new matches, an updated `result`, alerts); it is `done` when finished, "
            "`skipped` when not needed. Poll the check's `url`, or pass `complete=true` with `wait`."),
    )
    def create(self, request):
        wait = self._wait_seconds(request)
        complete = self._complete_flag(request)
        form = CheckSubmitSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        tenant = request_tenant(request)
        collection = None
        if "collection" in form.validated_data:
            collection = collection_from_field(organisation=tenant.organisation,
                                               collection_id=form.validated_data["collection"])
        upload = form.validated_data["file"]
        data, loaded = read_and_validate(upload)
        check = services.check_submit(
            organisation=tenant.organisation, data=data, loaded=loaded, filename=upload.name, collection=collection,
            submitted_by=request.user, api_key=tenant.api_key,
        )
        deadline = time.monotonic() + wait

        def ready() -> bool:
            return check.is_complete if complete else check.is_finished

        while wait and not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
            check.refresh_from_db()
        check.refresh_from_db()
        code = status.HTTP_200_OK if wait and ready() else status.HTTP_202_ACCEPTED
        headers = {"Location": f"/api/v1/checks/{check.pk}/"}
        return Response(self.get_serializer(check).data, status=code, headers=headers)

    @staticmethod
    def _complete_flag(request) -> bool:
        raw = request.query_params.get("complete", "").strip().lower()
        if raw in {"", "0", "false", "no"}:
            return False
        if raw in {"1", "true", "yes"}:
            return True
        raise serializers.ValidationError({"complete": ["Must be true or false."]})

    @staticmethod
    def _wait_seconds(request) -> float:
        raw = request.query_params.get("wait")
        if raw in (None, ""):
            return 0.0
        try:
            value = float(raw)
        except ValueError:
            raise serializers.ValidationError({"wait": ["Must be a number of seconds."]}) from None
        if not 0 <= value <= settings.IMGPROTECT_MAX_CHECK_WAIT_SECONDS:
            raise serializers.ValidationError(
                {"wait": [f"Must be between 0 and {settings.IMGPROTECT_MAX_CHECK_WAIT_SECONDS:g} seconds."]}
            )
        return value


class MatchFilter(django_filters.FilterSet):
    collection = OwnObjectFilter(field_name="protected_image__collection", scope=own_collections, noun="collection")
    verdict = django_filters.MultipleChoiceFilter(choices=Verdict.choices)
    created_after = IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created", lookup_expr="lt")
    check = OwnObjectFilter(field_name="source_check", scope=own_checks, noun="check")
    found_retroactively = StrictBooleanFilter(
        help_text="Only matches found (true) or not found (false) by a retroactive re-check.")

    class Meta:
        model = Match
        fields = ["collection", "verdict", "created_after", "created_before", "check", "found_retroactively"]


class MatchViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Match.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = MatchSerializer
    filterset_class = MatchFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return Match.objects.none()
        return selectors.match_list(organisation=request_tenant(self.request).organisation)

    @extend_schema(responses={(200, "image/png"): bytes}, summary="The evidence image: both pictures, region outlined")
    @action(detail=True, methods=["get"])
    def evidence(self, request, pk=None):
        match = self.get_object()
        if not match.evidence:
            raise Http404
        return file_response(match.evidence.open("rb"), image_format="PNG")
