"""A bare Falcon app answering ~100 bytes of static JSON: the framework's ceiling, served under
the same gunicorn settings as Lumen so the two can be compared in one run."""

import falcon


class Static:
    def on_get(self, req, resp):
        resp.media = {"id": "2a8bd1a5-9b37-44be-881e-c35b5238efed", "caption": "static", "n": 1}


app = falcon.App()
app.add_route("/static", Static())
