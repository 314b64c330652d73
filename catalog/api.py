"""REST API for the caller's organisation and its collections (protected images: ``matching.protection_api``)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors, services
from catalog.filters import IdLookupMixin
from catalog.models import Collection, Organisation, Role, validate_email_list
from catalog.permissions import request_tenant
from catalog.receipts import actor_of
from catalog.receipts_api import DELETION_SCHEMA, deletion_response
from catalog.validators import single_line
from imgprotect.api import StrictJson


def collection_from_field(*, organisation: Organisation, collection_id: int) -> Collection:
    """The caller's collection named by a request's ``collection`` field; a 400 on that field otherwise."""
    collection = selectors.collection_get(organisation=organisation, collection_id=collection_id)
    if collection is None:
        raise serializers.ValidationError({"collection": ["No such collection in your organisation."]})
    return collection


class OrganisationSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Organisation
        fields = ["id", "slug", "name", "created", "role", "suspect_retention_days"]

    def get_role(self, obj: Organisation) -> str:
        return request_tenant(self.context["request"]).role


class OrganisationUpdateSerializer(StrictJson, serializers.Serializer):
    suspect_retention_days = serializers.IntegerField(
        min_value=0, max_value=services.MAX_SUSPECT_RETENTION_DAYS,
        help_text="Days the signals of checked and scanned images are kept, so that images protected later are "
                  "searched for in them (retroactive re-checks). 0 keeps none and deletes those kept.")


class OrganisationView(APIView):
    write_roles = {None: Role.ADMIN}  # an APIView has no action: every write needs an admin

    @extend_schema(responses=OrganisationSerializer, summary="The caller's organisation and role")
    def get(self, request):
        tenant = request_tenant(request)
        return Response(OrganisationSerializer(tenant.organisation, context={"request": request}).data)

    @extend_schema(request=OrganisationUpdateSerializer, responses=OrganisationSerializer,
                   summary="Change the organisation's settings (admins): the suspect retention")
    def patch(self, request):
        tenant = request_tenant(request)
        body = OrganisationUpdateSerializer(data=request.data, partial=True)  # a PATCH: what is sent changes
        body.is_valid(raise_exception=True)
        organisation = tenant.organisation
        if "suspect_retention_days" in body.validated_data:
            organisation = services.organisation_suspect_retention_set(
                organisation=organisation, days=body.validated_data["suspect_retention_days"])
        return Response(OrganisationSerializer(organisation, context={"request": request}).data)


class CollectionSerializer(StrictJson, serializers.ModelSerializer):
    image_count = serializers.IntegerField(read_only=True)
    slug = serializers.SlugField(required=False, max_length=100)
    alert_emails = serializers.CharField(required=False, allow_blank=True, validators=[validate_email_list])

    class Meta:
        model = Collection
        fields = ["id", "slug", "name", "description", "alert_emails", "phash_max_distance", "image_count", "created"]
        read_only_fields = ["id", "created", "image_count"]
        extra_kwargs = {"phash_max_distance": {"min_value": 0, "max_value": 64},
                        "name": {"validators": [single_line]}}


class CollectionViewSet(IdLookupMixin, viewsets.ModelViewSet):
    queryset = Collection.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = CollectionSerializer
    write_roles = {"create": Role.ADMIN, "update": Role.ADMIN, "partial_update": Role.ADMIN, "destroy": Role.ADMIN}
    conflict_actions = {"create", "update", "partial_update"}  # a slug taken (documented 409: imgprotect/schema.py)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return Collection.objects.none()
        return selectors.collection_list(organisation=request_tenant(self.request).organisation)

    def perform_create(self, serializer):
        serializer.instance = services.collection_create(
            organisation=request_tenant(self.request).organisation, **serializer.validated_data
        )
        serializer.instance.image_count = 0

    def perform_update(self, serializer):
        services.collection_update(collection=serializer.instance, **serializer.validated_data)

    @extend_schema(summary="Delete a collection and its images; answers with the deletion receipt",
                   **DELETION_SCHEMA)
    def destroy(self, request, *args, **kwargs):
        receipt = services.collection_delete(collection=self.get_object(), actor=actor_of(request))
        return deletion_response(request, receipt)
