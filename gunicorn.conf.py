"""gunicorn settings for ``gunicorn -c gunicorn.conf.py lumen.wsgi:app``.

The settings live in lumen/gunicorn_conf.py so an installed Lumen has them too.
"""

from lumen.gunicorn_conf import *  # noqa: F403
