"""The OpenAPI schema's contract beyond drf-spectacular's defaults: the error shape
``imgprotect.api.exception_handler`` gives, the error statuses each operation documents, and one
request encoding an operation (so clients, and the fuzz test tests/test_api_fuzz.py, can rely on them).

Kept apart from ``imgprotect.api``: DRF imports that module's ``Pagination`` while drf-spectacular imports DRF.
"""
from __future__ import annotations

from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from catalog.validators import single_line

_NOT_CONTROL = "[^\\x00-\\x1f\\x7f-\\x9f\u2028\u2029]"
_NOT_CONTROL_OR_SPACE = "[^\\s\\x00-\\x1f\\x7f-\\x9f\u2028\u2029]"
SINGLE_LINE_PATTERN = f"^\\s*{_NOT_CONTROL_OR_SPACE}(?:{_NOT_CONTROL}*{_NOT_CONTROL_OR_SPACE})?\\s*$"


class ErrorSerializer(serializers.Serializer):
    """The body of every error answer."""

    error = serializers.CharField(help_text="Stable machine code: `invalid`, `not_authenticated`, `not_found`, "
                                            "`duplicate_key`, an image error code (docs/api.md)...")
    detail = serializers.CharField(help_text="A sentence for people.")
    # DRF's metaclass takes declared fields out of the class, so this never shadows Serializer.fields;
    # the stubs cannot express that.
    fields = serializers.DictField(required=False, child=serializers.JSONField(),  # type: ignore[assignment]
                                   help_text="Invalid input only: the messages for each field.")


ERROR_RESPONSES = {
    400: "Invalid input: `fields` names the problems; an image the engine refuses has its own `error` code.",
    401: "No API key, or a wrong or revoked one.",
    403: "Your role does not allow this action.",
    404: "No such object in your organisation, or no such page.",
    409: "Conflicts with the current state (a duplicate, or a job in the wrong status).",
    413: "The request body is over the size limit.",
    415: "The body's Content-Type is not one this operation reads.",
    429: "Throttled: retry after `Retry-After` seconds.",
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, plus the error answers each operation can give (``ERROR_RESPONSES``).

    Every operation can answer 400 (a session user in several organisations without
    ``X-Organisation``), 401, 403 and 429; 404 where it takes an id or a page, 413 and 415 where it
    reads a body; 409 where the view lists its action in ``conflict_actions``.
    """

    def map_parsers(self):
        # One documented body encoding: JSON where the view reads it, else multipart (file uploads).
        # DRF reads form encodings by HTML-form rules (an empty optional field counts as omitted,
        # for the browsable API's forms), which a JSON Schema cannot state; they stay accepted.
        media_types = super().map_parsers()
        for preferred in ("application/json", "multipart/form-data"):
            if preferred in media_types:
                return [preferred]
        return media_types

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # DRF strips text before checking it: "  " is refused like "", " a-b " is the slug "a-b". Say so.
        if (direction == "request" and isinstance(field, serializers.CharField) and field.trim_whitespace
                and not field.allow_blank and schema.get("type") == "string"):
            if isinstance(field, serializers.SlugField) and not field.allow_unicode:
                schema["pattern"] = r"^\s*[-a-zA-Z0-9_]+\s*$"
            elif "pattern" not in schema:
                schema["pattern"] = r"\S"
        # Single-line names (catalog/validators.py): no control character once DRF has stripped the ends.
        if direction == "request" and any(v is single_line for v in getattr(field, "validators", ())):
            schema["pattern"] = SINGLE_LINE_PATTERN
        return schema

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        parameters = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
        codes = [400, 401, 403, 429]
        if any(where == "path" for where, _ in parameters) or ("query", "page") in parameters:
            codes.append(404)
        if getattr(self.view, "action", None) in getattr(self.view, "conflict_actions", ()):
            codes.append(409)
        if "requestBody" in operation:
            codes += [413, 415]
        responses = operation["responses"]
        for code in sorted(codes):
            if str(code) in responses:
                continue
            answer = OpenApiResponse(ErrorSerializer, description=ERROR_RESPONSES[code])
            responses[str(code)] = self._get_response_for_code(answer, str(code), media_types=["application/json"])
            if code == 429:
                responses["429"]["headers"] = {"Retry-After": {
                    "schema": {"type": "integer"}, "description": "Seconds to wait before retrying.",
                }}
        return operation
