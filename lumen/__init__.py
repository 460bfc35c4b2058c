"""Lumen: a plugin-based photo-sharing REST backend.

This module is the plugin API: what a plugin imports, and all it needs to import (the list is
in docs/plugins.md, "API"). Everything else in the package may change between releases.
"""

from lumen.hookspecs import hookimpl

__version__ = "0.1.0"

# The rest is imported after the version and the marker: the modules below read them.
from lumen import slots  # noqa: E402
from lumen.app import Lumen, create_app  # noqa: E402
from lumen.caching import CachedRead  # noqa: E402
from lumen.cli import fail, pass_lumen  # noqa: E402
from lumen.config import (  # noqa: E402
    Bool,
    Choice,
    ConfigError,
    SettingsSchema,
    boolean,
    choice,
    positive_int,
    positive_number,
    text,
)
from lumen.errors import invalid  # noqa: E402
from lumen.headers import (  # noqa: E402
    add_vary,
    headers_of,
    is_json,
    lower_case_names,
    media_type_of,
    status_of,
)
from lumen.jsonenc import dumps as json_dumps  # noqa: E402
from lumen.jsonenc import loads as json_loads  # noqa: E402
from lumen.migrate import refuse_data_loss  # noqa: E402
from lumen.models import MAX_INTEGER  # noqa: E402
from lumen.openapi import document_errors, operation  # noqa: E402
from lumen.photos import CITIES_TAG, newest_public_reads  # noqa: E402
from lumen.plugins import PluginError  # noqa: E402
from lumen.records import records  # noqa: E402
from lumen.schemas import parse_integer, request_body  # noqa: E402
from lumen.secrets import Redactor  # noqa: E402
from lumen.session import after_commit, after_rollback  # noqa: E402
from lumen.tally import Tally  # noqa: E402

__all__ = [
    "CITIES_TAG",
    "MAX_INTEGER",
    "Bool",
    "CachedRead",
    "Choice",
    "ConfigError",
    "Lumen",
    "PluginError",
    "Redactor",
    "SettingsSchema",
    "Tally",
    "__version__",
    "after_commit",
    "add_vary",
    "after_rollback",
    "boolean",
    "choice",
    "create_app",
    "document_errors",
    "fail",
    "headers_of",
    "hookimpl",
    "invalid",
    "is_json",
    "json_dumps",
    "json_loads",
    "lower_case_names",
    "media_type_of",
    "newest_public_reads",
    "operation",
    "parse_integer",
    "pass_lumen",
    "positive_int",
    "positive_number",
    "records",
    "refuse_data_loss",
    "request_body",
    "slots",
    "status_of",
    "text",
]
