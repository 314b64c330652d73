"""The refusals every app's services raise: one base, each with a stable ``code`` and HTTP ``status``.

``imgprotect.api.exception_handler`` turns them into the API's error shape; the
portal shows ``message``. Image problems are ``matching.core.errors.ImageError``
(the engine has no Django), mapped to 400 by the same handler.
"""
from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses; ``code`` is stable for API clients."""

    code = "invalid"
    status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class Forbidden(ServiceError):
    code = "forbidden"
    status = 403


class NotFound(ServiceError):
    code = "not_found"
    status = 404


class Conflict(ServiceError):
    code = "conflict"
    status = 409
