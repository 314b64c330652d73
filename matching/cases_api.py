"""REST API for cases (``/api/v1/cases/``): list and filter, retrieve with the history, change the
status, assignee or add a note (PATCH), the case's matches, and its evidence package (docs/cases.md)."""
from __future__ import annotations

import django_filters
from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from catalog.files import harden
from catalog.filters import IdLookupMixin, id_field
from catalog.permissions import request_tenant
from imgprotect.api import StrictJson
from imgprotect.errors import ServiceError
from matching import cases
from matching.api import MatchSerializer
from matching.models import Case, CaseEvent
from matching.portal.case_evidence import case_evidence_export


class CaseEventSerializer(serializers.ModelSerializer):
    actor = serializers.SerializerMethodField()

    class Meta:
        model = CaseEvent
        fields = ["action", "from_status", "to_status", "actor", "note", "created"]
        read_only_fields = fields

    def get_actor(self, obj: CaseEvent) -> str | None:
        """The username of who made the change; null for imgprotect itself."""
        return obj.actor.get_username() if obj.actor else None


class CaseSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    assignee = serializers.IntegerField(source="assignee_id", read_only=True, allow_null=True,
                                        help_text="The user id of the member working the case.")
    assignee_username = serializers.SerializerMethodField()
    match_count = serializers.IntegerField(read_only=True)
    to_review = serializers.IntegerField(read_only=True, help_text="Matches still to review (`new`).")
    latest_match = serializers.DateTimeField(read_only=True, allow_null=True)
    matches_url = serializers.SerializerMethodField()

    class Meta:
        model = Case
        fields = ["id", "url", "kind", "source", "status", "assignee", "assignee_username", "match_count",
                  "to_review", "latest_match", "created", "updated", "matches_url"]
        read_only_fields = fields

    def get_url(self, obj: Case) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/cases/{obj.pk}/")

    def get_matches_url(self, obj: Case) -> str:
        return self.context["request"].build_absolute_uri(f"/api/v1/cases/{obj.pk}/matches/")

    def get_assignee_username(self, obj: Case) -> str | None:
        return obj.assignee.get_username() if obj.assignee else None


class CaseDetailSerializer(CaseSerializer):
    history = CaseEventSerializer(many=True, read_only=True, source="events")

    class Meta(CaseSerializer.Meta):
        fields = [*CaseSerializer.Meta.fields, "history"]
        read_only_fields = fields


class CaseUpdateSerializer(StrictJson, serializers.Serializer):
    status = serializers.ChoiceField(choices=Case.Status.choices, required=False)
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000,
                                 help_text="Kept in the case's history with the change.")
    assignee = id_field(required=False, allow_null=True,
                        help_text="The user id of a member of your organisation; null to unassign.")


class CaseFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Case.Status.choices)
    kind = django_filters.ChoiceFilter(choices=Case.Kind.choices)

    class Meta:
        model = Case
        fields = ["status", "kind"]


class CaseViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Case.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = CaseSerializer
    filterset_class = CaseFilter
    http_method_names = ["get", "patch", "post", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return Case.objects.none()
        sort = self.request.query_params.get("sort", "latest") if self.action == "list" else "latest"
        if sort not in cases.SORTS:
            raise serializers.ValidationError({"sort": [f"Must be one of: {', '.join(cases.SORTS)}."]})
        rows = cases.case_list(organisation=request_tenant(self.request).organisation, sort=sort)
        if getattr(self, "action", None) == "retrieve":
            rows = rows.prefetch_related("events__actor")
        return rows

    def get_serializer_class(self):
        if getattr(self, "action", None) in ("retrieve", "partial_update"):
            return CaseDetailSerializer
        return CaseSerializer

    @extend_schema(parameters=[OpenApiParameter("sort", str, enum=list(cases.SORTS), description=(
        "`latest` (default): the case with the newest match first; `matches`: the most matches first."))],
        summary="Your cases: matches grouped by the site or scanned source they came from")
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="A case, with its history")
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(request=CaseUpdateSerializer, responses=CaseDetailSerializer,
                   summary="Change a case's status or assignee, or add a note (kept in its history)",
                   description="Each change is an event of the case's history, with the note. What the case "
                               "already is (the same status, the same assignee, no note) changes nothing: 200.")
    def partial_update(self, request, pk=None):
        case = self.get_object()
        form = CaseUpdateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        assignee = None
        if data.get("assignee") is not None:
            assignee = cases.case_assignees(organisation=case.organisation).filter(pk=data["assignee"]).first()
            if assignee is None:
                raise serializers.ValidationError({"assignee": ["No such member in your organisation."]})
        try:
            cases.case_update(case=case, actor=request.user, status=data.get("status"), note=data.get("note", ""),
                              assignee=assignee, assign="assignee" in data)
        except ServiceError as exc:
            if exc.code != "nothing_to_change":
                raise
            # PATCH states what the case should be: when it already is (the same status, no note), 200.
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses=MatchSerializer(many=True), summary="The case's matches, newest first")
    @action(detail=True, methods=["get"], filter_backends=[])  # the cases' filters do not apply to its matches
    def matches(self, request, pk=None):
        rows = cases.case_matches(case=self.get_object())
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(MatchSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request=None, responses={(200, "application/zip"): OpenApiResponse(
        bytes, description="`case-<id>/SUMMARY.txt`, `case.json`, `SHA256SUMS` and one `match-<id>/` folder "
                           "per match that is not dismissed (docs/cases.md).")},
        summary="Export the case's evidence package (a ZIP); recorded in its history")
    @action(detail=True, methods=["post"], filter_backends=[])
    def evidence(self, request, pk=None):
        name, data = case_evidence_export(case=self.get_object(), actor=request.user)
        response = harden(FileResponse(data, content_type="application/zip", as_attachment=True, filename=name))
        response["Cache-Control"] = "private, no-store"
        return response

