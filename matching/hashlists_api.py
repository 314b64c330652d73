"""REST API of hash exchange (docs/hash-exchange.md): hash lists (``/api/v1/hash-lists/``), a
collection's PDQ export (``/api/v1/collections/{id}/hashes/``) and Hasher-Matcher-Actioner's lookup
(``/m/lookup``, ``/m/raw_lookup``), all behind the API's keys and scoped to the caller's organisation."""
from __future__ import annotations

import re

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors as catalog_selectors
from catalog.filters import IdLookupMixin, parse_id
from catalog.models import Role, validate_email_list
from catalog.validators import single_line
from catalog.permissions import request_tenant
from matching import hashlists
from matching.core.hashlists import EXPORT_FORMATS, export_text
from matching.core.signals import compute_signals
from matching.models import HashList
from matching.uploads import read_and_validate


class HashListSerializer(serializers.ModelSerializer):
    entry_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = HashList
        fields = ["id", "name", "description", "alert_emails", "entry_count", "created"]
        read_only_fields = fields


class HashListImportSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, validators=[single_line],
                                 help_text="Unique in your organisation; the bank name of lookups.")
    file = serializers.FileField(help_text="PDQ hashes: 64 hex digits a line (or `pdq <hash>`), or CSV with a "
                                           "header naming a `pdq` column and optional `quality` and `label`.")
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="",
                                        validators=[single_line])
    alert_emails = serializers.CharField(required=False, allow_blank=True, default="",
                                         validators=[validate_email_list],
                                         help_text="Comma-separated addresses told about new matches.")


class HashListViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                      viewsets.GenericViewSet):
    queryset = HashList.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = HashListSerializer
    parser_classes = [MultiPartParser, FormParser]
    write_roles = {"create": Role.ADMIN, "destroy": Role.ADMIN}
    conflict_actions = {"create"}  # a name taken (documented 409: imgprotect/schema.py)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return HashList.objects.none()
        return hashlists.hash_lists_of(request_tenant(self.request).organisation)

    @extend_schema(request=HashListImportSerializer, responses={201: HashListSerializer},
                   summary="Import a PDQ hash list (multipart) as a hash-only bank",
                   description="The file is checked whole first (64 hex digits a hash, labels without "
                               "control characters or a leading `= + - @`, at most "
                               f"{hashlists.MAX_IMPORT_ENTRIES:,} hashes and "
                               f"{hashlists.MAX_IMPORT_BYTES // (1024 * 1024)} MB): any bad line is a 400 "
                               "naming it, and nothing is written.")
    def create(self, request):
        form = HashListImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        tenant = request_tenant(request)
        upload = form.validated_data["file"]
        if upload.size > hashlists.MAX_IMPORT_BYTES:  # refused by its declared size, before reading it
            raise ValidationError({"file": [f"The file is over {hashlists.MAX_IMPORT_BYTES // (1024 * 1024)} MB."]})
        hash_list = hashlists.hash_list_import(
            organisation=tenant.organisation, name=form.validated_data["name"], data=upload.read(),
            description=form.validated_data["description"], alert_emails=form.validated_data["alert_emails"],
            created_by=request.user)
        return Response(self.get_serializer(self.get_queryset().get(pk=hash_list.pk)).data,
                        status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        hashlists.hash_list_delete(hash_list=instance)


class _AnyFormat(DefaultContentNegotiation):
    """``?format=`` names the export's format here, not one of DRF's renderers."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


_CONTENT_TYPES = {"te": "text/plain", "pdq": "text/plain", "csv": "text/csv"}


def _flag(request, name: str) -> bool:
    raw = request.query_params.get(name, "").strip().lower()
    if raw in {"", "0", "false", "no"}:
        return False
    if raw in {"1", "true", "yes"}:
        return True
    raise ValidationError({name: ["Must be true or false."]})


class CollectionHashesView(APIView):
    content_negotiation_class = _AnyFormat

    @extend_schema(
        operation_id="collections_hashes_export",
        parameters=[
            OpenApiParameter("id", int, OpenApiParameter.PATH, description="The collection."),
            OpenApiParameter("format", str, enum=list(EXPORT_FORMATS), description=(
                "`te`: `pdq <hash>` lines (threatexchange's file exchange); `pdq`: one hash a line (HMA); "
                "`csv`: pdq,quality,image_id,key,collection,label. Default `te`.")),
            OpenApiParameter("variants", bool, description="Also the hashes of each image's seven flips and "
                                                           "rotations (slower: the pictures are read)."),
        ],
        responses={(200, "text/plain"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
        summary="Export a collection's PDQ hashes for Hasher-Matcher-Actioner and ThreatExchange",
    )
    def get(self, request, pk: str):
        if parse_id(pk) is None:
            raise NotFound("No such collection in your organisation.")
        collection = catalog_selectors.collection_get(organisation=request_tenant(request).organisation,
                                                      collection_id=int(pk))
        if collection is None:
            raise NotFound("No such collection in your organisation.")
        fmt = request.query_params.get("format", "te").strip().lower() or "te"
        if fmt not in EXPORT_FORMATS:
            raise ValidationError({"format": [f"One of {', '.join(EXPORT_FORMATS)}."]})
        variants = _flag(request, "variants")
        rows = hashlists.collection_hash_rows(collection=collection, variants=variants)
        response = StreamingHttpResponse(export_text(rows, fmt), content_type=f"{_CONTENT_TYPES[fmt]}; charset=utf-8")
        extension = "csv" if fmt == "csv" else "txt"
        suffix = "-variants" if variants else ""
        response["Content-Disposition"] = f'attachment; filename="{collection.slug}-pdq-{fmt}{suffix}.{extension}"'
        return response


# --- Hasher-Matcher-Actioner's matching API (OpenMediaMatch/blueprints/matching.py) ------------

_PDQ = re.compile(r"^[0-9a-f]{64}$")  # threatexchange's PdqSignal.validate_signal_str
_PDQ_SCHEMA = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "64 lowercase hex digits"}

_LOOKUP_RESPONSE = OpenApiResponse(
    OpenApiTypes.OBJECT, description=(
        "HMA's shape: `{bank name: [{bank_content_id, distance}]}`, one key per collection (its slug) and per "
        "hash list (its name) holding a hash within the near-duplicate PDQ distance; `{}` when none. "
        "`bank_content_id` is a protected image's id (collection banks) or a hash-list entry's id; "
        "`distance` the PDQ Hamming distance as a string (HMA's `pretty_str`)."))


def _signal_from(params) -> str:
    signal = (params.get("signal") or "").strip()
    signal_type = (params.get("signal_type") or "").strip()
    if not signal or not signal_type:
        raise ValidationError({"signal": ["Both signal and signal_type are required."]})
    if signal_type != "pdq":
        raise ValidationError({"signal_type": [f"No such SignalType {signal_type[:40]!r}: only 'pdq' is served."]})
    if not _PDQ.match(signal):
        raise ValidationError({"signal": ["invalid signal: a PDQ hash is 64 lowercase hex digits."]})
    return signal


def _banks_filter(params, found: dict[str, list[dict[str, object]]]) -> dict[str, list[dict[str, object]]]:
    wanted = params.get("banks")
    if not wanted:
        return found
    names = {b.strip() for b in wanted.split(",")}
    return {bank: hits for bank, hits in found.items() if bank in names}


class HmaLookupUploadSerializer(serializers.Serializer):
    photo = serializers.FileField(help_text="The picture, in HMA's content-type field name.")


class HmaLookupView(APIView):
    """``/m/lookup``: clients written for Hasher-Matcher-Actioner query imgprotect unchanged."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="hma_lookup",
        parameters=[
            OpenApiParameter("signal", _PDQ_SCHEMA, required=True, description="The PDQ hash."),
            OpenApiParameter("signal_type", str, required=True, enum=["pdq"], description="Only `pdq`."),
            OpenApiParameter("banks", str, description="Comma-separated bank names to restrict the answer to."),
        ],
        responses={200: _LOOKUP_RESPONSE},
        summary="Hasher-Matcher-Actioner lookup of a PDQ hash",
    )
    def get(self, request):
        signal = _signal_from(request.query_params)
        found = hashlists.hma_lookup(organisation=request_tenant(request).organisation, pdq=signal)
        return Response(_banks_filter(request.query_params, found))

    @extend_schema(
        operation_id="hma_lookup_file",
        request={"multipart/form-data": HmaLookupUploadSerializer},
        parameters=[OpenApiParameter("banks", str, description="Comma-separated bank names.")],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description=(
            "`{\"pdq\": {bank name: [{bank_content_id, distance}]}}`, HMA's answer for an uploaded file."))},
        summary="Hasher-Matcher-Actioner lookup of an uploaded picture",
    )
    def post(self, request):
        form = HmaLookupUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        if len(request.FILES.getlist("photo")) != 1:  # HMA takes one file a request
            raise ValidationError({"photo": ["Send exactly one file, in the multipart field 'photo'."]})
        _, loaded = read_and_validate(form.validated_data["photo"])
        signals = compute_signals(loaded)
        organisation = request_tenant(request).organisation
        found = {} if not signals.get("pdq") else hashlists.hma_lookup(organisation=organisation, pdq=signals["pdq"])
        return Response({"pdq": _banks_filter(request.query_params, found)})


class HmaRawLookupView(APIView):
    """``/m/raw_lookup``: HMA's bare list of content ids (with ``include_distance``, id and distance)."""

    @extend_schema(
        operation_id="hma_raw_lookup",
        parameters=[
            OpenApiParameter("signal", _PDQ_SCHEMA, required=True, description="The PDQ hash."),
            OpenApiParameter("signal_type", str, required=True, enum=["pdq"]),
            OpenApiParameter("banks", str, description="Comma-separated bank names."),
            OpenApiParameter("include_distance", bool),
        ],
        responses={200: inline_serializer("HmaRawLookup", fields={"matches": serializers.ListField(
            child=serializers.JSONField(), help_text="Content ids, or {bank_content_id, distance} objects.")})},
        summary="Hasher-Matcher-Actioner raw lookup of a PDQ hash",
    )
    def get(self, request):
        signal = _signal_from(request.query_params)
        found = _banks_filter(request.query_params,
                              hashlists.hma_lookup(organisation=request_tenant(request).organisation, pdq=signal))
        hits = [hit for bank_hits in found.values() for hit in bank_hits]
        if _flag(request, "include_distance"):
            return Response({"matches": hits})
        return Response({"matches": [hit["bank_content_id"] for hit in hits]})
