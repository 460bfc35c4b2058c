"""What gunicorn loads: ``lumen.wsgi:app``. Imported in each worker, after the fork, so every
worker builds its own engine and pool."""

from lumen import logs
from lumen.app import create_app
from lumen.config import load_settings

settings = load_settings()
logs.configure(settings)
app = create_app(settings)
