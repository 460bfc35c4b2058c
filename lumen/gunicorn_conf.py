"""gunicorn settings, read from the environment (``gunicorn.conf.py`` at the project root
re-exports this module so both ``lumen serve`` and a plain ``gunicorn -c gunicorn.conf.py``
use it).

The defaults follow what was measured on a 2-core machine (README, "Choosing the worker
class"): sync workers, two per core, matched or beat gthread on database endpoints with 2-3x
lower p99. Sync workers expect a buffering proxy (nginx, a cloud load balancer) in front when
clients are slow.
"""

import os
import sys

from lumen.config import (
    ConfigError,
    ServeSettingsSchema,
    load_section,
    load_settings,
    serve_address,
)


def _load():
    """The server's and the core's settings, or one line naming the bad variable and exit 2."""
    try:
        return load_section(ServeSettingsSchema, os.environ), load_settings()
    except ConfigError as exc:
        print(f"lumen: {exc}", file=sys.stderr)
        sys.exit(2)


_serve, _core = _load()

bind = [serve_address(_serve)]
workers = _serve.workers
worker_class = _serve.worker_class
threads = _serve.threads
timeout = _serve.timeout
graceful_timeout = 30
keepalive = 5
# Each worker is its own process with its own pool: the app is never built before the fork.
preload_app = False

accesslog = None if _serve.access_log == "off" else _serve.access_log
# One JSON object per request, each field encoded (never interpolated); no query string, no
# header but the User-Agent: see lumen/access_log.py.
logger_class = "lumen.access_log.JSONAccessLogger"
errorlog = "-"
loglevel = _core.log_level.lower()

certfile = _serve.tls_cert
keyfile = _serve.tls_key


def _start_lumen():
    """Build and start the app object in the master, or stop with one line naming the setting."""
    from lumen.app import Lumen
    from lumen.plugins import PluginError, make_plugin_manager

    try:
        settings = load_settings()
        lumen = Lumen(settings, make_plugin_manager(settings.enabled_plugins))
        lumen.start()
    except (ConfigError, PluginError) as exc:
        print(f"lumen: {exc}", file=sys.stderr)
        sys.exit(2)
    return lumen


def on_starting(server):
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:
        # Figures of a previous run would be added to this one's.
        import shutil

        shutil.rmtree(multiproc_dir, ignore_errors=True)
        os.makedirs(multiproc_dir, exist_ok=True)


def when_ready(server):
    # Once per deployment start, before any worker forks: plugins import data or warm caches
    # here instead of once per worker.
    lumen = _start_lumen()
    from lumen import logs

    logs.configure(lumen.settings)
    try:
        lumen.hook.lumen_before_serve(lumen=lumen)
    finally:
        lumen.shutdown()  # the master keeps no connection a worker could inherit


def post_fork(server, worker):
    # Should the app ever be preloaded, connections made in the master must not be shared.
    wsgi = sys.modules.get("lumen.wsgi")
    if wsgi is not None:
        wsgi.app.lumen.engine.dispose(close=False)


def worker_exit(server, worker):
    wsgi = sys.modules.get("lumen.wsgi")
    if wsgi is not None:
        wsgi.app.lumen.shutdown()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
