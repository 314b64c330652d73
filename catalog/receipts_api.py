"""REST API for deletion receipts (catalog/receipts.py): list, get (the signed JSON), verify; and the answer
every DELETE of an image or a collection gives (``deletion_response``). Routes: ``/api/v1/receipts/``."""
from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from catalog import receipts
from catalog.filters import IdLookupMixin
from catalog.models import DeletionReceipt, Role
from catalog.permissions import request_tenant
from imgprotect.api import StrictJson

PREFER = "return=representation"


def receipt_path(receipt: DeletionReceipt) -> str:
    return f"/api/v1/receipts/{receipt.pk}/"


class ReceiptSerializer(serializers.ModelSerializer):
    """A receipt in a list: what was deleted, when, by whom; ``url`` gives the signed receipt."""

    url = serializers.SerializerMethodField()
    totals = serializers.SerializerMethodField()

    class Meta:
        model = DeletionReceipt
        fields = ["id", "uuid", "kind", "subject_id", "subject_label", "deleted_by_label", "created", "totals", "url"]
        read_only_fields = fields

    def get_url(self, obj: DeletionReceipt) -> str:
        return self.context["request"].build_absolute_uri(receipt_path(obj))

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_totals(self, obj: DeletionReceipt) -> dict[str, Any]:
        return dict(obj.body.get("totals", {}))


def _hex(length: int, **kwargs: Any) -> serializers.CharField:
    # Not stripped, and the pattern is exact: what the schema accepts is what is read.
    return serializers.CharField(trim_whitespace=False, max_length=length, validators=[
        RegexValidator(f"^[0-9a-f]{{{length}}}$", f"Must be {length} lowercase hex digits.")], **kwargs)


class SignatureSerializer(StrictJson, serializers.Serializer):
    algorithm = serializers.ChoiceField(choices=[(receipts.ALGORITHM, receipts.ALGORITHM)])
    key_id = _hex(16, required=False, help_text="Names the signing key (docs/receipts.md).")
    value = _hex(64, help_text="Hex HMAC-SHA256 of the canonical JSON of `receipt`.")


class ReceiptDocumentSerializer(StrictJson, serializers.Serializer):
    """The signed receipt, as downloaded and as verified (docs/receipts.md lists its fields)."""

    id = serializers.IntegerField(read_only=True, help_text="The receipt's id in this API (not signed).")
    receipt = serializers.DictField(help_text="What was removed: rows, files with SHA-256, derived files, "
                                              "index entries, when and by whom.")
    signature = SignatureSerializer()


class VerificationSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    reason = serializers.CharField()


def document_data(receipt: DeletionReceipt) -> dict[str, Any]:
    return {"id": receipt.pk, **receipts.receipt_document(receipt)}


def deletion_response(request: Request, receipt: DeletionReceipt) -> Response:
    """204 with ``Location`` naming the receipt, as before receipts (existing clients keep working); with
    ``Prefer: return=representation`` (RFC 7240), 200 with the signed receipt itself."""
    headers = {"Location": request.build_absolute_uri(receipt_path(receipt))}
    if PREFER in request.headers.get("Prefer", "").replace(" ", "").lower().split(","):
        headers["Preference-Applied"] = PREFER
        return Response(document_data(receipt), status=200, headers=headers)
    return Response(status=204, headers=headers)


# The schema of a DELETE that answers with a receipt (images, collections).
DELETION_SCHEMA: dict[str, Any] = {
    "description": "Deletes at once and answers 204 with `Location` naming the signed deletion receipt; with "
                   "`Prefer: return=representation`, 200 with the receipt (docs/receipts.md).",
    "parameters": [
        OpenApiParameter(
            "Prefer", OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
            description="`return=representation`: answer 200 with the signed deletion receipt instead of 204; "
                        "other preferences are ignored (RFC 7240)."),
        OpenApiParameter("Location", OpenApiTypes.URI, OpenApiParameter.HEADER, response=[200, 204],
                         description="The deletion receipt: `GET` it for the signed JSON."),
    ],
    "responses": {
        204: OpenApiResponse(description="Deleted. `Location` is the deletion receipt (`GET /api/v1/receipts/{id}/`)."),
        200: OpenApiResponse(ReceiptDocumentSerializer,
                             description="Deleted, with `Prefer: return=representation`: the signed receipt."),
    },
}


class DeletionReceiptViewSet(IdLookupMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                             viewsets.GenericViewSet):
    """Your organisation's deletion receipts. A deleted organisation's receipt is not here (its API keys
    went with it): its deleting user reads it in the portal account page, staff in the admin."""

    queryset = DeletionReceipt.objects.none()  # the schema's model only: get_queryset() filters by tenant
    serializer_class = ReceiptSerializer
    write_roles = {"verify": Role.VIEWER}  # checking a signature changes nothing

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no tenant
            return DeletionReceipt.objects.none()
        return receipts.receipt_list(organisation_id=request_tenant(self.request).organisation.pk)

    def get_serializer_class(self):
        return ReceiptDocumentSerializer if self.action in ("retrieve", "verify") else ReceiptSerializer

    @extend_schema(summary="Deletion receipts of your organisation, newest first",
                   description="Every deletion of an image or a collection in your organisation; `url` is the "
                               "signed receipt. A deleted organisation's own receipt is not here (docs/receipts.md).")
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses=ReceiptDocumentSerializer, summary="A signed deletion receipt (JSON, as downloaded)",
                   description="The receipt (`receipt`) and its HMAC-SHA256 (`signature`); `id` is not signed.",
                   parameters=[OpenApiParameter("download", OpenApiTypes.BOOL, required=False,
                                                description="Answer as a file attachment.")])
    def retrieve(self, request, *args, **kwargs):
        receipt = self.get_object()
        download = request.query_params.get("download", "false").lower()
        if download not in ("true", "false", "1", "0"):
            raise serializers.ValidationError({"download": ["Must be true or false."]})
        response = Response(document_data(receipt))
        if download in ("true", "1"):
            response["Content-Disposition"] = f'attachment; filename="deletion-receipt-{receipt.uuid}.json"'
        return response

    @extend_schema(request=ReceiptDocumentSerializer, responses=VerificationSerializer,
                   summary="Check a receipt's signature against this deployment's key",
                   description="`valid` is true when `receipt` is unchanged since this deployment signed it "
                               "(with `SECRET_KEY` or one of `SECRET_KEY_FALLBACKS`).")
    @action(detail=False, methods=["post"], parser_classes=[JSONParser])
    def verify(self, request):
        form = ReceiptDocumentSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        result = receipts.receipt_verify(request.data)
        return Response({"valid": result.valid, "reason": result.reason})
