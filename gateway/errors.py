"""Every error the gateway answers with, and the one place they become HTTP responses."""

from __future__ import annotations

import falcon
import falcon.asgi

from gateway.iiif.errors import IIIFError

AsgiApp = falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]


class GatewayError(Exception):
    """An error with an HTTP status and a short public message."""

    status: int = 500

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class ImageNotFound(GatewayError):
    """No image under that identifier."""

    status = 404


class BadRequest(GatewayError):
    """The decoder rejected the request's arguments."""

    status = 400


class SourceUnreadable(GatewayError):
    """The stored image is corrupt, truncated or not a format we read."""

    status = 500


class Overloaded(GatewayError):
    """The decoders are at capacity or unreachable; the client should retry later."""

    status = 503


class UpstreamFailure(GatewayError):
    """The decoder failed in a way the client cannot fix."""

    status = 502


class UpstreamTimeout(GatewayError):
    """The decoder did not answer within the request deadline."""

    status = 504


async def handle_gateway_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: GatewayError, params: object
) -> None:
    _respond(resp, ex.status, ex.message)
    if ex.retry_after_s is not None:
        resp.set_header("Retry-After", str(ex.retry_after_s))


async def handle_iiif_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: IIIFError, params: object
) -> None:
    _respond(resp, ex.status, str(ex))


def _respond(resp: falcon.asgi.Response, status: int, message: str) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_TEXT
    resp.text = f"{falcon.code_to_http_status(status)}: {message}\n"
    # A failed render must not be cached as if it were the image.
    resp.set_header("Cache-Control", "no-store")


def register(app: AsgiApp) -> None:
    """Install the handlers; anything else stays a 500 that Falcon logs."""
    app.add_error_handler(GatewayError, handle_gateway_error)
    app.add_error_handler(IIIFError, handle_iiif_error)
