"""What the mocks answer in each real service's style: error bodies, authentication
failures, OpenAI's rate-limit headers and the generic faults' responses."""

from __future__ import annotations

import hmac
import math
from typing import Literal

from starlette.responses import JSONResponse, Response

AuthStyle = Literal["openai", "llamaparse", "supabase"]

# --- error bodies in each service's style ---------------------------------------------------


def _mask_key(key: str) -> str:
    # The real OpenAI API echoes a masked key; keep too little of it to be useful.
    return f"{key[:3]}***{key[-4:]}" if len(key) >= 12 else "***"


def _openai_error(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _supabase_error(status: int, error: str, message: str) -> dict:
    return {"statusCode": str(status), "error": error, "message": message}


def error_body(style: AuthStyle, status: int, message: str) -> dict:
    """A generic error body for `status` in the service's style."""
    if style == "openai":
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        return _openai_error(message, type_, None)
    if style == "llamaparse":
        return {"detail": message}
    return _supabase_error(status, "Error", message)


def auth_failure(style: AuthStyle, key: str | None, headers: dict[str, str]) -> Response | None:
    """None if the request is authorised, else the real service's 401/403 response."""
    if key is None:
        return None
    bearer = headers.get("authorization", "")
    token = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None

    def ok(candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), key.encode())

    if style == "supabase":
        apikey = headers.get("apikey")
        if ok(token) or ok(apikey):
            return None
        if token is None and apikey is None:
            body = _supabase_error(
                401, "Unauthorized", "headers must have required property 'authorization'"
            )
            return JSONResponse(body, status_code=401)
        return JSONResponse(_supabase_error(403, "Unauthorized", "Invalid Compact JWS"), 403)
    if ok(token):
        return None
    if style == "llamaparse":
        return JSONResponse({"detail": "Invalid authentication token"}, status_code=401)
    if not token:
        msg = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or "
            "as the password field (with blank username) if you're accessing the API from your "
            "browser and are prompted for a username and password. You can obtain an API key "
            "from https://platform.openai.com/account/api-keys."
        )
        return JSONResponse(_openai_error(msg, "invalid_request_error", None), status_code=401)
    msg = (
        f"Incorrect API key provided: {_mask_key(token)}. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    return JSONResponse(
        _openai_error(msg, "invalid_request_error", "invalid_api_key"), status_code=401
    )


def _format_reset(seconds: float) -> str:
    # OpenAI formats reset durations like "20ms", "1s", "6m0s".
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


def rate_limit_headers(
    remaining_requests: int = 0,
    remaining_tokens: int = 0,
    reset_s: float = 1.0,
    limit_requests: int = 10_000,
    limit_tokens: int = 10_000_000,
) -> dict[str, str]:
    """OpenAI-style x-ratelimit-* headers."""
    return {
        "x-ratelimit-limit-requests": str(limit_requests),
        "x-ratelimit-remaining-requests": str(max(0, remaining_requests)),
        "x-ratelimit-reset-requests": _format_reset(reset_s),
        "x-ratelimit-limit-tokens": str(limit_tokens),
        "x-ratelimit-remaining-tokens": str(max(0, remaining_tokens)),
        "x-ratelimit-reset-tokens": _format_reset(reset_s),
    }


# Each service's own wording for a server-side failure.
_SERVER_ERRORS: dict[str, tuple[int, dict[str, str]]] = {
    "http_500": (
        500,
        {
            "openai": "The server had an error while processing your request. Sorry about that!",
            "llamaparse": "Internal Server Error",
            "supabase": "Internal Server Error",
        },
    ),
    "http_503": (
        503,
        {
            "openai": "The engine is currently overloaded, please try again later.",
            "llamaparse": "Service Unavailable",
            "supabase": "Service Unavailable",
        },
    ),
}


def fault_response(style: AuthStyle, spec: dict) -> Response:
    kind = spec["kind"]
    if kind in _SERVER_ERRORS:
        status, messages = _SERVER_ERRORS[kind]
        return JSONResponse(error_body(style, status, messages[style]), status_code=status)
    if kind == "malformed_json":
        # Truncated JSON: what a proxy cutting a response short looks like.
        return Response(
            b'{"object": "list", "data": [{"object": "emb', 200, media_type="application/json"
        )
    retry_after = spec.get("retry_after")
    headers = rate_limit_headers(reset_s=float(retry_after) if retry_after else 1.0)
    if retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(float(retry_after))))
        headers["retry-after-ms"] = str(round(float(retry_after) * 1000))
    if kind == "insufficient_quota":
        msg = (
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors."
        )
        body = _openai_error(msg, "insufficient_quota", "insufficient_quota")
        return JSONResponse(body, status_code=429, headers=headers)
    # http_429
    if style == "openai":
        body = _openai_error(
            "Rate limit reached for requests per min (RPM): Limit 10000, Used 10000, "
            "Requested 1. Please try again later.",
            "requests",
            "rate_limit_exceeded",
        )
    elif style == "llamaparse":
        body = {"detail": "Rate limit exceeded. Please try again later."}
    else:
        body = _supabase_error(429, "Too Many Requests", "Rate limit exceeded")
    return JSONResponse(body, status_code=429, headers=headers)
