"""A test-only plugin whose routes fail in every way a request can, after using the database."""

import falcon
from sqlalchemy import text

from lumen import hookimpl


class FaultResource:
    def on_get(self, req, resp, kind):
        """Use the database, then fail as ``kind`` says."""
        db = req.context.db
        db.execute(text("SELECT 1"))
        if kind == "exception":
            raise RuntimeError("secret internal detail")
        if kind == "http":
            raise falcon.HTTPBadRequest(title="Bad", description="kind: deliberate")
        if kind == "sql":
            db.execute(text("SELECT * FROM no_such_table"))
        if kind == "status":
            resp.status = falcon.HTTP_409
            return
        resp.media = {"ok": True}


@hookimpl
def lumen_routes(lumen):
    return [("/test/fault/{kind}", FaultResource())]
