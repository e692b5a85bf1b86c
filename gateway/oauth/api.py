"""OAuth 2.0 client credentials (RFC 6749 §4.4): a consumer trades one of its API keys for a
short-lived access token, and the JWKS that verifies the tokens.

The client is the consumer: ``client_id`` is its id, ``client_secret`` any of its live API keys (so a
key's rotation and revocation are the secret's), sent with HTTP Basic (``client_secret_basic``) or in
the form (``client_secret_post``). An error is RFC 6749 §5.2's ``error`` and ``error_description``,
inside the problem document every other error is.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, Any, Literal
from urllib.parse import unquote_plus

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from citygrid.auth import Principal
from citygrid.errors import DomainError, Unauthenticated
from citygrid.problems import problem_responses
from gateway.authn import InvalidCredentials

router = APIRouter(tags=["gateway OAuth 2.0"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(DomainError):
    """RFC 6749 §5.2: ``error`` names the reason for the client library, ``code`` for ours."""

    status = 400
    title = "Token request refused"
    error = "invalid_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, error=self.error, error_description=detail, **extra)


class InvalidRequest(OAuthError):
    code = "oauth.invalid_request"
    error = "invalid_request"


class UnsupportedGrantType(OAuthError):
    code = "oauth.unsupported_grant_type"
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    code = "oauth.invalid_scope"
    error = "invalid_scope"


class InvalidClient(Unauthenticated):
    code = "oauth.invalid_client"
    title = "Client authentication failed"

    def __init__(self, detail: str, *, basic: bool) -> None:
        headers = {"WWW-Authenticate": 'Basic realm="citygrid"'} if basic else None
        super().__init__(detail, error="invalid_client", error_description=detail, headers=headers)


class AccessToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (the RFC 6750 scheme, not a secret)
    expires_in: int = Field(description="Seconds the token is valid for.")
    scope: str = Field(description="The scopes granted, space-separated.")


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("the Basic credentials are malformed", basic=True) from None
    client_id, separator, secret = decoded.partition(":")
    if not separator:
        raise InvalidClient("the Basic credentials are malformed", basic=True)
    # RFC 6749 §2.3.1: both are form-urlencoded before they are joined.
    return unquote_plus(client_id), unquote_plus(secret)


Field_ = Annotated[str | None, Form(max_length=1000)]


@router.post(
    "/oauth/token",
    operation_id="issue_access_token",
    responses=problem_responses(400, 401, 422, 429, 503),
)
async def issue_token(
    request: Request,
    grant_type: Field_ = None,
    client_id: Field_ = None,
    client_secret: Field_ = None,
    scope: Field_ = None,
) -> JSONResponse:
    """An access token for the client-credentials grant: Bearer, valid ``expires_in`` seconds, with
    the consumer's scopes or the subset asked for in ``scope``."""
    state = request.app.state.gateway
    client = state.admit(request)
    basic = _basic_credentials(request)
    if basic is not None and (client_id is not None or client_secret is not None):
        raise InvalidRequest("authenticate the client one way: Basic or the form, not both")
    if grant_type is None:
        raise InvalidRequest("grant_type is required")
    if grant_type != "client_credentials":
        raise UnsupportedGrantType(f"this gateway issues client_credentials tokens only, not {grant_type!r}")
    claimed, secret = basic if basic is not None else (client_id, client_secret)
    if not claimed or not secret:
        raise InvalidClient("client_id and client_secret are required", basic=basic is not None)
    try:
        consumer_id = uuid.UUID(claimed)
    except ValueError:
        raise InvalidClient("no such client", basic=basic is not None) from None
    try:
        principal, allowance, key = await state.authenticator.authenticate_key_fresh(secret, client)
    except InvalidCredentials:
        raise InvalidClient("the client's credentials are not valid", basic=basic is not None) from None
    if principal.subject != f"consumer:{consumer_id}":
        raise InvalidClient("the client's credentials are not valid", basic=basic is not None)
    await state.count(principal.subject, allowance)
    granted = _granted(principal, scope)
    token = state.tokens.issue(principal, allowance, granted, key)
    state.metrics.tokens_issued.inc()
    body = AccessToken(
        access_token=token,
        expires_in=int(state.tokens.policy.lifetime.total_seconds()),
        scope=" ".join(sorted(granted)),
    )
    return JSONResponse(body.model_dump(), headers=NO_STORE)


def _granted(principal: Principal, scope: str | None) -> list[str]:
    if scope is None or not scope.strip():
        return sorted(principal.scopes)
    asked = scope.split()
    beyond = sorted(set(asked) - principal.scopes)
    if beyond:
        raise InvalidScope(f"the client does not hold {', '.join(beyond)}")
    return sorted(set(asked))


@router.get("/oauth/jwks.json", operation_id="token_keys")
async def token_keys(request: Request) -> JSONResponse:
    """The public keys that verify the gateway's access tokens (RFC 7517), the next one included
    before it signs and retired ones until their last token expires."""
    state = request.app.state.gateway
    state.admit(request)
    return JSONResponse(state.tokens.jwks(), headers={"Cache-Control": "public, max-age=300"})
