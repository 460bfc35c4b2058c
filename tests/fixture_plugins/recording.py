"""A test-only plugin that implements one of each kind of hook and records what it was given."""

import click
import falcon

from lumen import hookimpl

received: list[tuple[str, dict]] = []


class Boom(Exception):
    pass


class EchoResource:
    def on_get(self, req, resp):
        """Echo what the middleware saw."""
        resp.media = {"seen_by_middleware": req.context.seen}

    def on_post(self, req, resp):
        """Raise the plugin's own exception."""
        raise Boom("handled by the plugin")


class SeeingMiddleware:
    def process_request(self, req, resp):
        req.context.seen = True


def handle_boom(req, resp, exc, params):
    raise falcon.HTTPStatus(falcon.HTTP_418, text="boom handled")


@hookimpl
def lumen_routes(lumen):
    return [("/test/echo", EchoResource())]


@hookimpl
def lumen_middleware(lumen):
    return [(100, SeeingMiddleware())]


@hookimpl
def lumen_error_handlers(lumen):
    return [(Boom, handle_boom)]


@hookimpl
def lumen_health_checks(lumen):
    return {"test:always": lambda: {"status": "pass"}}


@hookimpl
def lumen_cli(group):
    @group.command("recording-hello")
    def hello():
        click.echo("hello from the recording plugin")


@hookimpl
def lumen_photo_created(lumen, photo, changes):
    received.append(("photo_created", {"id": str(photo.id), "changes": changes}))


@hookimpl
def lumen_photo_updated(lumen, photo, changes):
    received.append(("photo_updated", {"id": str(photo.id), "changes": changes}))


@hookimpl
def lumen_photo_deleted(lumen, photo, changes):
    received.append(("photo_deleted", {"id": str(photo.id), "changes": changes}))


@hookimpl
def lumen_user_updated(lumen, user, changes):
    received.append(("user_updated", {"id": str(user.id), "changes": changes}))
