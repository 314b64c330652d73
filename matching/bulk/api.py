"""REST API for bulk jobs (create an index or a scan, list, get, cancel, resume, per-file errors) and watches."""
from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from catalog.api import collection_from_field
from catalog.filters import IdLookupMixin, OwnObjectFilter, id_field, own_collections
from catalog.models import Role
from catalog.permissions import request_tenant
from imgprotect.api import StrictBooleanFilter, StrictJson
from matching.bulk import selectors, services, watches
from matching.bulk.models import BulkJob, BulkJobError, Watch


class BulkJobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    embed = serializers.BooleanField(read_only=True)
    progress = serializers.FloatField(read_only=True, allow_null=True, help_text="Share of the source handled, 0..1.")
    eta_seconds = serializers.FloatField(read_only=True, allow_null=True)
    elapsed_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = BulkJob
        fields = ["id", "url", "kind", "status", "source", "collection", "embed", "total", "done", "failed",
                  "skipped", "matched", "match_reports", "progress", "rate", "eta_seconds",
                  "elapsed_seconds", "spark_app_id", "attempts", "error", "log_tail", "created", "started",
                  "finished"]
        read_only_fields = fields

    def get_url(self, obj: BulkJob) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/bulk-jobs/{obj.pk}/")


class BulkJobCreateSerializer(StrictJson, serializers.Serializer):
    kind = serializers.ChoiceField(choices=BulkJob.Kind.choices)
    # DRF's metaclass takes declared fields out of the class, so this never shadows Field.source;
    # the stubs cannot express that (as ErrorSerializer.fields in imgprotect/schema.py).
    source = serializers.CharField(  # type: ignore[assignment]
        max_length=2048, help_text="A directory under the allowed roots, or s3://bucket/prefix.")
    collection = id_field(required=False, help_text="Index: the target collection (required). "
                                                    "Scan: only match this collection.")
    embed = serializers.BooleanField(required=False, allow_null=True, default=None,
                                     help_text="Compute CNN embeddings (default: when the CNN stage is enabled).")


class BulkJobErrorSerializer(serializers.ModelSerializer):
    class Meta:
        model = BulkJobError
        fields = ["key", "code", "reason"]
        read_only_fields = fields


def own_watches(request: Any) -> QuerySet[Watch]:
    return Watch.objects.filter(organisation=request_tenant(request).organisation)


class BulkJobFilter(django_filters.FilterSet):
    collection = OwnObjectFilter(scope=own_collections, noun="collection")
    watch = OwnObjectFilter(scope=own_watches, noun="watch", help_text="Only the runs of this watch.")

    class Meta:
        model = BulkJob
        fields = ["status", "kind", "collection", "watch"]


class BulkJobViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = BulkJob.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = BulkJobSerializer
    filterset_class = BulkJobFilter
    # Bulk work is heavy and reads whole sources: admins only.
    write_roles = {"create": Role.ADMIN, "cancel": Role.ADMIN, "resume": Role.ADMIN}
    conflict_actions = {"cancel", "resume"}  # a job in the wrong status (documented 409: imgprotect/schema.py)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return BulkJob.objects.none()
        return selectors.bulkjob_list(organisation=request_tenant(self.request).organisation)

    @extend_schema(request=BulkJobCreateSerializer, responses={201: BulkJobSerializer},
                   summary="Index a source into a collection, or scan it for copies")
    def create(self, request):
        form = BulkJobCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        organisation = request_tenant(request).organisation
        collection = None
        if "collection" in form.validated_data:
            collection = collection_from_field(organisation=organisation,
                                               collection_id=form.validated_data["collection"])
        job = services.bulkjob_create(
            organisation=organisation, kind=form.validated_data["kind"], source=form.validated_data["source"],
            collection=collection, embed=form.validated_data["embed"], created_by=request.user, trusted=False,
        )
        job.refresh_from_db()
        return Response(self.get_serializer(job).data, status=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/v1/bulk-jobs/{job.pk}/"})

    @extend_schema(request=None, responses=BulkJobSerializer, summary="Cancel a queued or running job")
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = services.bulkjob_cancel(job=self.get_object())
        return Response(self.get_serializer(job).data)

    @extend_schema(request=None, responses=BulkJobSerializer,
                   summary="Resume a failed or cancelled job (only missing keys are computed)")
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        job = services.bulkjob_resume(job=self.get_object())
        return Response(self.get_serializer(job).data)

    @extend_schema(responses=BulkJobErrorSerializer(many=True), summary="Files the job skipped, with reasons")
    @action(detail=True, methods=["get"], filter_backends=[])  # the jobs' filters do not apply to its errors
    def errors(self, request, pk=None):
        rows = selectors.bulkjob_errors(job=self.get_object())
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(BulkJobErrorSerializer(page, many=True).data)


# --- watches -------------------------------------------------------------------------------------

class WatchRunSerializer(serializers.ModelSerializer):
    """A watch's last run: a scan job (``/api/v1/bulk-jobs/{id}/``, its errors at ``.../errors/``)."""

    class Meta:
        model = BulkJob
        fields = ["id", "status", "total", "done", "failed", "skipped", "matched", "match_reports", "error",
                  "started", "finished"]
        read_only_fields = fields


class WatchSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    state = serializers.ChoiceField(read_only=True, choices=["paused", "failing", "running", "ok", "scheduled"],
                                    help_text="paused, failing (see status_reason), running, ok, or scheduled "
                                              "(never ran).")
    status_reason = serializers.CharField(read_only=True, help_text="Why the watch is in its state, for people.")
    last_job = WatchRunSerializer(read_only=True, allow_null=True)
    seen_keys = serializers.SerializerMethodField(help_text="Keys its runs handled; later runs skip them.")
    match_reports = serializers.SerializerMethodField(help_text="Match reports written by all its runs.")

    class Meta:
        model = Watch
        fields = ["id", "url", "source", "collection", "schedule", "enabled", "state", "status_reason",
                  "last_run", "next_run", "last_error", "last_job", "seen_keys", "match_reports", "created"]
        read_only_fields = fields

    def get_url(self, obj: Watch) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/watches/{obj.pk}/")

    def get_seen_keys(self, obj: Watch) -> int:
        return obj.seen_keys.count()

    def get_match_reports(self, obj: Watch) -> int:
        return watches.watch_matches(watch=obj).count()


class WatchCreateSerializer(StrictJson, serializers.Serializer):
    # As BulkJobCreateSerializer.source: DRF takes declared fields out of the class.
    source = serializers.CharField(  # type: ignore[assignment]
        max_length=2048, help_text="A directory under the organisation's allowed roots, or s3://bucket/prefix.")
    collection = id_field(required=False, help_text="Only match this collection (default: all).")
    schedule = serializers.ChoiceField(choices=Watch.Schedule.choices, default=Watch.Schedule.DAILY)
    enabled = serializers.BooleanField(required=False, default=True, help_text="false: created paused.")


class WatchUpdateSerializer(StrictJson, serializers.Serializer):
    schedule = serializers.ChoiceField(choices=Watch.Schedule.choices, required=False)
    enabled = serializers.BooleanField(required=False, help_text="false pauses the watch, true resumes it.")


class WatchFilter(django_filters.FilterSet):
    enabled = StrictBooleanFilter(help_text="true: active watches; false: paused ones.")

    class Meta:
        model = Watch
        fields = ["enabled", "schedule"]


class WatchViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                   viewsets.GenericViewSet):
    """Sources scanned on a schedule for new files (docs/bulk.md, "Watches")."""

    queryset = Watch.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = WatchSerializer
    filterset_class = WatchFilter
    # A watch reads a whole source on a schedule: admins only, as bulk jobs.
    write_roles = {"create": Role.ADMIN, "partial_update": Role.ADMIN, "destroy": Role.ADMIN}
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return Watch.objects.none()
        return watches.watch_list(organisation=request_tenant(self.request).organisation)

    @extend_schema(request=WatchCreateSerializer, responses={201: WatchSerializer},
                   summary="Watch a source: scan its new files every hour or day")
    def create(self, request):
        form = WatchCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        organisation = request_tenant(request).organisation
        collection = None
        if "collection" in form.validated_data:
            collection = collection_from_field(organisation=organisation,
                                               collection_id=form.validated_data["collection"])
        watch = watches.watch_create(organisation=organisation, source=form.validated_data["source"],
                                     collection=collection, schedule=form.validated_data["schedule"],
                                     enabled=form.validated_data["enabled"], created_by=request.user)
        return Response(self.get_serializer(watch).data, status=status.HTTP_201_CREATED,
                        headers={"Location": f"/api/v1/watches/{watch.pk}/"})

    @extend_schema(request=WatchUpdateSerializer, responses=WatchSerializer,
                   summary="Pause or resume a watch, or change its schedule")
    def partial_update(self, request, pk=None):
        watch = self.get_object()
        form = WatchUpdateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        watch = watches.watch_update(watch=watch, schedule=form.validated_data.get("schedule"),
                                     enabled=form.validated_data.get("enabled"))
        return Response(self.get_serializer(watch).data)

    @extend_schema(summary="Stop watching (its runs and their match reports stay)")
    def destroy(self, request, pk=None):
        watches.watch_delete(watch=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
