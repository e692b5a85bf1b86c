"""The Open311 door: ``/open311/v2/...`` to the case service, with the key Open311 clients send.

Open311 clients put their key in an ``api_key`` query parameter or form field, not a header. The
gateway takes it from there (or from ``X-API-Key``/``Authorization`` as everywhere else), checks it
against the stored hash like any key, and removes it from the query and the form before the call
goes on, so it never reaches a service, a log line or an audit record.

The standard asks no key for reads, so GETs of the discovery document, the services, a service's
definition, the requests and one request (and a token) are served without one by default: to an
anonymous principal with no scopes (no ``pii:read``; the Open311 views carry no personal data
anyway), limited per client address (``CITYGRID_OPEN311_ANONYMOUS_RATE_LIMIT_PER_MINUTE``, the
address found through the trusted proxies). ``CITYGRID_OPEN311_ANONYMOUS_READS=false`` turns that
off. A POST always needs a key with ``cases:write``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode
from xml.etree import ElementTree

from fastapi import Request, Response

from citygrid.auth import MissingScope, Principal
from citygrid.errors import DomainError
from gateway import proxy
from gateway.authn import MissingCredentials
from gateway.routing import READ_METHODS, UPSTREAMS, is_clean, required_scope

API_KEY_FIELD = "api_key"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 1000
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Signed as kind "anonymous": the case service lets it make the reads its scope declaration opens to
# anonymous principals (contract.scopes), nothing else.
ANONYMOUS = Principal(subject="anonymous", kind="anonymous", name="anonymous Open311 reader")
# What an anonymous reader may GET: the standard's read resources, nothing else.
ANONYMOUS_READS = re.compile(
    r"^(?:discovery|services|requests|services/[^/]+|requests/[^/]+|tokens/[^/]+)\.(?:xml|json)$"
)


class MalformedForm(DomainError):
    code = "open311.malformed_form"
    title = "Malformed form"


class MethodNotAllowed(DomainError):
    code = "http.method_not_allowed"
    status = 405
    title = "Method not allowed"


def split_api_key(encoded: bytes) -> tuple[bytes, str | None]:
    """A form-encoded query or body without its ``api_key`` fields, and the first key in it.

    Without a key the bytes pass on untouched; with one, the rest is re-encoded (same meaning).
    """
    if not encoded:
        return encoded, None
    try:
        pairs = parse_qsl(
            encoded.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise MalformedForm("send the query and the form as UTF-8 form encoding") from None
    keys = [value for name, value in pairs if name == API_KEY_FIELD]
    if not keys:
        return encoded, None
    rest = [(name, value) for name, value in pairs if name != API_KEY_FIELD]
    return urlencode(rest).encode(), keys[0]


def spec_status(status: int) -> int:
    """GeoReport v2 knows 400, 403 and 404; rate limits and outages keep their own status."""
    if status in (401, 403):
        return 403
    if status in (404, 429) or status >= 500:
        return status
    return 400


def error_response(path: str, error: DomainError) -> Response:
    """The gateway's refusal in the spec's error shape and the format the path asks for."""
    status = spec_status(error.status)
    entry: dict[str, Any] = {"code": status, "description": error.detail, "problem": error.code}
    headers = dict(error.headers)
    if path.lower().endswith(".json"):
        body = json.dumps([entry], ensure_ascii=False).encode()
        return Response(
            body, status_code=status, media_type="application/json; charset=utf-8", headers=headers
        )
    root = ElementTree.Element("errors")
    item = ElementTree.SubElement(root, "error")
    for name, value in entry.items():
        ElementTree.SubElement(item, name).text = str(value)
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode").encode()
    )
    return Response(body, status_code=status, media_type="text/xml; charset=utf-8", headers=headers)


async def route_to_open311(path: str, request: Request) -> Response:
    try:
        return await _forward(path, request)
    except DomainError as error:
        return error_response(path, error)


async def _forward(path: str, request: Request) -> Response:
    state = request.app.state.gateway
    client = state.admit(request)
    if not is_clean(path):
        raise proxy.UnknownService(f"no such path: /open311/v2/{path}")
    if request.method not in ("GET", "POST"):
        raise MethodNotAllowed(f"GeoReport v2 takes GET and POST, not {request.method}")
    query, query_key = split_api_key(request.scope.get("query_string", b""))
    body: bytes | None = None  # None: the body streams through untouched
    body_key = None
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if request.method == "POST" and content_type == FORM_TYPE:
        # A form may carry the api_key: read it (the kit's body limit bounds it) to take the key out.
        body, body_key = split_api_key(await request.body())
    api_key = body_key or query_key
    # X-API-Key, then the Open311 api_key, then Authorization: a client behind a proxy that adds
    # its own Authorization header still gets in with the key Open311 told it to send.
    allowance = None
    if "x-api-key" in request.headers or (api_key is None and "authorization" in request.headers):
        principal, allowance = await state.authenticate(request, client)
    elif api_key is not None:
        principal, allowance = await state.authenticate_key(api_key, client)
    elif (
        request.method in READ_METHODS
        and state.settings.open311_anonymous_reads
        and ANONYMOUS_READS.match(path)
    ):
        principal = ANONYMOUS
    else:
        raise MissingCredentials("send your api_key (a query parameter, a form field or X-API-Key)")
    request.state.principal = principal
    if principal is not ANONYMOUS:
        scope = required_scope(UPSTREAMS["case"], request.method, f"open311/v2/{path}")
        if not principal.has_scope(scope):
            raise MissingScope(f"this call needs the scope '{scope}'", required_scope=scope)
    if allowance is None:
        # Anonymous reads are limited per client address in each replica, not in the shared ledger:
        # a flood of addresses must cost the database nothing.
        quota_headers = state.count_anonymous(
            f"anonymous:{client}", state.settings.open311_anonymous_rate_limit_per_minute
        )
    else:
        quota_headers = await state.count(principal.subject, allowance)
    return await state.forward(  # type: ignore[no-any-return]
        request,
        "case",
        path=f"open311/v2/{path}",
        principal=principal,
        prefix="/",
        query=query,
        content=body,
        response_headers=quota_headers,
    )
