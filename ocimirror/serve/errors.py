"""The distribution spec's error responses: a status, a code from the spec's table and a message for people.

Messages are written here, for clients, from what the client sent; they never carry the store's location or
any text of an exception raised below (those go to the server's log).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from starlette.responses import Response

#: Every response says which API it speaks (clients probing ``/v2/`` look for it).
API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


class ApiError(Exception):
    """An error answered to the client as ``{"errors": [{"code": ..., "message": ...}]}``."""

    def __init__(self, status: HTTPStatus, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self, method: str = "GET") -> Response:
        """The JSON response (headers only for ``HEAD``, with the length the body would have)."""
        body = json.dumps({"errors": [{"code": self.code, "message": self.message}]}).encode()
        headers = {
            **self.headers,
            API_VERSION_HEADER[0]: API_VERSION_HEADER[1],
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }
        return Response(b"" if method == "HEAD" else body, status_code=self.status, headers=headers)


def name_invalid(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, "NAME_INVALID", message)


def name_unknown(name: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "NAME_UNKNOWN", f"repository {name} is not known to this registry")


def manifest_unknown(name: str, reference: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "MANIFEST_UNKNOWN", f"manifest {reference} is not known in {name}")


def blob_unknown(name: str, digest: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "BLOB_UNKNOWN", f"blob {digest} is not known in {name}")


def digest_invalid(reference: str) -> ApiError:
    return ApiError(
        HTTPStatus.BAD_REQUEST,
        "DIGEST_INVALID",
        f"{reference[:200]!r} is no digest (sha256:<64 hex> or sha512:<128 hex>)",
    )


def range_not_satisfiable(size: int) -> ApiError:
    return ApiError(
        HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
        "RANGE_INVALID",
        f"the requested range is outside the blob of {size} bytes",
        {"Content-Range": f"bytes */{size}"},
    )


def unsupported() -> ApiError:
    return ApiError(
        HTTPStatus.METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "this registry is a read-only mirror: only GET and HEAD are supported",
        {"Allow": "GET, HEAD"},
    )


def unauthorized(realm: str) -> ApiError:
    return ApiError(
        HTTPStatus.UNAUTHORIZED,
        "UNAUTHORIZED",
        "authentication required",
        {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'},
    )


def not_found() -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, "UNSUPPORTED", "no such endpoint in the read-only registry API")


def internal(message: str) -> ApiError:
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "UNKNOWN", message)
