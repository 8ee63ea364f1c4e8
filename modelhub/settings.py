"""Django settings for ModelHub, read from the environment.

Two runtime shapes (see README "Configuration"):
- embedded default: nothing set; all state under MODELHUB_HOME (SQLite in WAL mode,
  artifacts on the filesystem, Celery over kombu's filesystem transport);
- full stack: DATABASE_URL or PG* (PostgreSQL), CELERY_BROKER_URL (Redis) and
  MODELHUB_S3_* (an S3-compatible bucket through django-storages).

Every value is read through modelhub/settings_env.py (typed, with errors that name the variable).
"""

import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from modelhub.settings_env import (
    caches_from_env,
    database_from_env,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    throttle_rate,
    trusted_proxies,
)

BASE_DIR = Path(__file__).resolve().parent.parent

MODELHUB_HOME = Path(env_str("MODELHUB_HOME", str(BASE_DIR / "var"))).resolve()
MODELHUB_HOME.mkdir(parents=True, exist_ok=True)

# --- Security -----------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """Return SECRET_KEY from the env, else one generated once and kept in MODELHUB_HOME."""
    key = env_str("SECRET_KEY")
    if not key:
        key_file = MODELHUB_HOME / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(64))
            key_file.chmod(0o600)
        key = key_file.read_text().strip()
    placeholder = any(word in key.lower() for word in ("change-me", "changeme", "example", "replace-me"))
    insecure = key.startswith("django-insecure") or len(key) < 50 or len(set(key)) < 5 or placeholder
    if insecure and not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is insecure (shorter than 50 characters, too few distinct characters, "
            "a 'django-insecure' key, or a placeholder such as 'change-me'). Set SECRET_KEY to a long "
            "random value, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`, or unset it to "
            "use a key generated in MODELHUB_HOME. Insecure keys are accepted only with DEBUG=1."
        )
    return key


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Served over HTTPS (behind a TLS proxy, as in docker-compose): HSTS, SSL redirect, secure cookies.
MODELHUB_HTTPS = env_bool("MODELHUB_HTTPS", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", MODELHUB_HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
if MODELHUB_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Prometheus scrapes /metrics over the internal network (docker-compose, profile monitoring), not through nginx.
    SECURE_REDIRECT_EXEMPT = [r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("MODELHUB_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
# Content-Security-Policy without 'unsafe-inline': every script and style is a static file.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}

# --- Applications -------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core",
    "teams",
    "artifacts",
    "backbones",
    "heads",
    "assemblies",
    "training",
    "releases",
    "dashboard",
    "overview",
    "mlflow_api",
    "bundles",
    "inference",
    "metrics",
]

MIDDLEWARE = [
    # First, so that every answer (the refusals of the middlewares below too) is counted and timed.
    "metrics.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "core.middleware.UploadLimitMiddleware",
    "core.middleware.MalformedRequestMiddleware",
    "core.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "modelhub.urls"
WSGI_APPLICATION = "modelhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.current_team",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------


DATABASES = {"default": database_from_env(home=MODELHUB_HOME)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview:home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Static files and artifacts ------------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = MODELHUB_HOME / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)

S3_BUCKET = env_str("MODELHUB_S3_BUCKET")
MODELHUB_ARTIFACT_BACKEND = "s3" if S3_BUCKET else "filesystem"
MODELHUB_ARTIFACT_ROOT = Path(env_str("MODELHUB_ARTIFACT_ROOT", str(MODELHUB_HOME / "artifacts")))
# The deployment bundle (bundles.work): tfserving/ and triton/ folders, by default beside the filesystem
# artifacts; MODELHUB_TFSERVING_BASE_PATH is where TF Serving sees tfserving/ (compose: /models).
MODELHUB_BUNDLE_ROOT = Path(env_str("MODELHUB_BUNDLE_ROOT", str(MODELHUB_ARTIFACT_ROOT)))
MODELHUB_TFSERVING_BASE_PATH = env_str("MODELHUB_TFSERVING_BASE_PATH", "")
MODELHUB_S3 = {
    "bucket_name": S3_BUCKET,
    "endpoint_url": env_str("MODELHUB_S3_ENDPOINT_URL") or None,
    "access_key": env_str("MODELHUB_S3_ACCESS_KEY_ID") or None,
    "secret_key": env_str("MODELHUB_S3_SECRET_ACCESS_KEY") or None,
    "region_name": env_str("MODELHUB_S3_REGION", "us-east-1"),
    "location": env_str("MODELHUB_S3_PREFIX", ""),
    "addressing_style": env_str("MODELHUB_S3_ADDRESSING_STYLE", "path"),
    "signature_version": "s3v4",
    "file_overwrite": True,
    "querystring_auth": False,
}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True

# Uploads stream to temp files on disk (never held whole in memory) and are size-capped.
MODELHUB_MAX_UPLOAD_BYTES = env_int("MODELHUB_MAX_UPLOAD_BYTES", 2 * 1024**3)
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
# Bodies that are not file uploads (JSON such as a predict's inputs, form fields) are read into
# memory: at most this many bytes, else 413 (core.middleware.MalformedRequestMiddleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MODELHUB_MAX_REQUEST_BODY_BYTES", 16 * 1024**2)
FILE_UPLOAD_TEMP_DIR = str(MODELHUB_HOME / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_HANDLERS = ["artifacts.upload_handlers.LimitedTemporaryFileUploadHandler"]
# Zip-bomb guard for .keras files: the largest total uncompressed size a worker will open.
MODELHUB_MAX_MODEL_UNCOMPRESSED_BYTES = env_int("MODELHUB_MAX_MODEL_UNCOMPRESSED_BYTES", 8 * 1024**3)
# What one model file may hold, checked by the untrusted-file reader (modelhub/ml/untrusted) before
# any weight is read: config.json's size and layer count, weight arrays and what they declare.
MODELHUB_MAX_MODEL_CONFIG_BYTES = env_int("MODELHUB_MAX_MODEL_CONFIG_BYTES", 16 * 1024**2)
MODELHUB_MAX_MODEL_LAYERS = env_int("MODELHUB_MAX_MODEL_LAYERS", 20_000)
MODELHUB_MAX_MODEL_WEIGHT_ARRAYS = env_int("MODELHUB_MAX_MODEL_WEIGHT_ARRAYS", 100_000)
MODELHUB_MAX_MODEL_DECLARED_BYTES = env_int("MODELHUB_MAX_MODEL_DECLARED_BYTES", 8 * 1024**3)
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("MODELHUB_MAX_FILES_PER_REQUEST", 500)
# Dataset limits, checked from file headers before a worker decodes or allocates anything
# (training/work/dataset_zips.py, image_zips.py): decoded array bytes, pixels per image and in
# all, zip members and unpacked size. Over-limit datasets are rejected with a message naming the setting.
MODELHUB_DATASET_MAX_BYTES_IN_MEMORY = env_int("MODELHUB_DATASET_MAX_BYTES_IN_MEMORY", 2 * 1024**3)
MODELHUB_DATASET_MAX_IMAGE_PIXELS = env_int("MODELHUB_DATASET_MAX_IMAGE_PIXELS", 40_000_000)
MODELHUB_DATASET_MAX_TOTAL_PIXELS = env_int("MODELHUB_DATASET_MAX_TOTAL_PIXELS", 2_000_000_000)
MODELHUB_DATASET_MAX_FILES = env_int("MODELHUB_DATASET_MAX_FILES", 200_000)
MODELHUB_DATASET_MAX_UNCOMPRESSED_BYTES = env_int("MODELHUB_DATASET_MAX_UNCOMPRESSED_BYTES", 8 * 1024**3)
# Rows of a table dataset (CSV, JSON Lines, Parquet; training/work/tables.py), checked while reading
# and, for Parquet, from the file's metadata before any row is read.
MODELHUB_DATASET_MAX_ROWS = env_int("MODELHUB_DATASET_MAX_ROWS", 10_000_000)
# Bounds of training job parameters (training/specs/jobs.py): a job asking for more is refused with
# 400 naming the field and the setting. They cap what one job can make a worker allocate or run.
MODELHUB_MAX_EPOCHS = env_int("MODELHUB_MAX_EPOCHS", 1000)
MODELHUB_MAX_BATCH_SIZE = env_int("MODELHUB_MAX_BATCH_SIZE", 65536)
MODELHUB_MAX_HEAD_UNITS = env_int("MODELHUB_MAX_HEAD_UNITS", 100_000)
MODELHUB_MAX_HIDDEN_UNITS = env_int("MODELHUB_MAX_HIDDEN_UNITS", 8192)
MODELHUB_MAX_HIDDEN_LAYERS = env_int("MODELHUB_MAX_HIDDEN_LAYERS", 16)
MODELHUB_MAX_GROWTH_UNITS = env_int("MODELHUB_MAX_GROWTH_UNITS", 16384)
MODELHUB_MAX_LEARNING_RATE = env_float("MODELHUB_MAX_LEARNING_RATE", 1.0)

# --- REST API -----------------------------------------------------------------------------


# Per-user rate limits of the expensive operations (core/throttling.py): each scope's
# MODELHUB_THROTTLE_<SCOPE> is "<requests>/<s|min|hour|day>", or 0 / off for no limit. Over it:
# 429 with Retry-After. Lists, details and status polls are never throttled.
THROTTLE_DEFAULT_RATES = {
    "compare": "30/min",  # GET /api/heads/compare/
    "predict": "30/min",  # POST /api/assemblies/{id}/predict/
    "evaluate": "30/min",  # POST /api/heads/{id}/evaluate/
    "imports": "20/min",  # POST /api/imports/
    "uploads": "120/min",  # POST /api/uploads/, /api/heads/, /api/backbones/, /api/datasets/
    "webhook_test": "5/min",  # POST /api/webhooks/{id}/test/
    "tokens": "10/min",  # POST /api/tokens/ and /api/auth/token/ (per address when anonymous)
    "jobs": "30/min",  # POST /api/jobs/, /api/jobs/{id}/retry/
    "assemblies": "20/min",  # POST /api/assemblies/
}


MODELHUB_THROTTLE_RATES = {scope: throttle_rate(scope, rate) for scope, rate in THROTTLE_DEFAULT_RATES.items()}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Named, hashed, expiring tokens (teams.models.ApiToken); header "Token <key>".
        "teams.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.StandardPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.exception_handler.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "core.schema.ModelHubAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Views opt in with throttle_scope; rates are MODELHUB_THROTTLE_RATES (above).
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.UserScopedRateThrottle"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ModelHub API",
    "DESCRIPTION": (
        "Registry, review, training and assembly of backbone + head models.\n\n"
        "Authenticate with `Authorization: Token <key>` (POST /api/auth/token/ exchanges a password for one). "
        "Lists are pages: `{count, next, previous, results}`, with `?page=N&page_size=M` (at most 500). "
        'Every error has the body `{"error": {"code", "message", "detail"}}`; non-members get 404, never 403. '
        "Besides the statuses each operation lists, any path answers 405 to a method it does not list and "
        "406 to an Accept header it cannot satisfy (JSON is always available). "
        "Expensive operations (compare, predict, evaluate, imports, uploads, jobs, assemblies, webhook tests, "
        "token creation) are rate-limited per user: 429 with Retry-After (MODELHUB_THROTTLE_<SCOPE>). "
        "A request line (method, path and query) over 8,190 bytes gets 414 from the web server "
        "(gunicorn --limit-request-line), a header line over 8,190 bytes 400, before ModelHub sees it."
    ),
    "VERSION": "1.0.0",
    # Operation ids and tags as before the protocol paths (/v1/, /v2/, /metrics) joined the schema.
    "SCHEMA_PATH_PREFIX": "/api",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request and response components apart: uploads are binary files in requests, and request
    # components are named "...Request".
    "COMPONENT_SPLIT_REQUEST": True,
    # One enum component per lifecycle, named after its model (many serializers have a "status").
    "ENUM_NAME_OVERRIDES": {
        "BackboneStatusEnum": "backbones.models.BackboneVersion.Status",
        "HeadStatusEnum": "heads.models.HeadVersion.Status",
        "ImportStatusEnum": "heads.models.ModelImport.Status",
        "AssemblyStatusEnum": "assemblies.models.Assembly.Status",
        "ExportStatusEnum": "assemblies.models.AssemblyExport.Status",
        "ExportFormatEnum": "assemblies.models.AssemblyExport.Format",
        "ExportQuantizationEnum": "assemblies.models.AssemblyExport.Quantization",
        "PredictionPendingStatusEnum": ["queued", "running"],
        "PredictionAnsweredStatusEnum": ["succeeded"],
        "DatasetStatusEnum": "training.models.Dataset.Status",
        "DatasetFormatEnum": "training.models.Dataset.Format",
        "JobStatusEnum": "training.models.Job.Status",
        "JobKindEnum": "training.models.Job.Kind",
        "ReportStatusEnum": "training.models.ForgettingReport.Status",
        "HealthStatusEnum": ["ok", "degraded"],
    },
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery -------------------------------------------------------------------------------

BROKER_DIR = MODELHUB_HOME / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "control", "processed"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600)}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_TIMEOUT = env_int("CELERY_BROKER_CONNECTION_TIMEOUT", 5)
# The job row in the database is the truth; no result backend is needed.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = env_int("MODELHUB_TASK_SOFT_TIME_LIMIT", 6 * 3600)
CELERY_TASK_TIME_LIMIT = env_int("MODELHUB_TASK_TIME_LIMIT", 6 * 3600 + 300)
# The reaper fails claimed rows whose heartbeat is older than CELERY_TASK_TIME_LIMIT + this margin;
# gc never deletes a blob younger than that either (long work stores blobs before their rows).
MODELHUB_REAPER_MARGIN = env_int("MODELHUB_REAPER_MARGIN", 600)
MODELHUB_REAPER_INTERVAL = env_int("MODELHUB_REAPER_INTERVAL", 300)
# Fault injection for tests only (never set it in production): a worker holds each claimed row
# this many seconds (beating its heartbeat) before working, so a test can kill it mid-task.
MODELHUB_FAULT_HOLD_SECONDS = env_int("MODELHUB_FAULT_HOLD_SECONDS", 0)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-work": {"task": "core.reap_stale_work", "schedule": MODELHUB_REAPER_INTERVAL},
}
CELERY_WORKER_CONCURRENCY = env_int("MODELHUB_WORKER_CONCURRENCY", 1)
# An oversized request gets its 413 after this much of its body is read and discarded, so that
# clients which send the whole body first (Python requests, urllib) see the 413, not a broken pipe.
MODELHUB_413_DRAIN_BYTES = env_int("MODELHUB_413_DRAIN_BYTES", 64 * 1024**2)
# /api/health/ pings the workers at most this often (seconds, per web process).
MODELHUB_HEALTH_WORKER_CACHE_SECONDS = env_int("MODELHUB_HEALTH_WORKER_CACHE_SECONDS", 5)
MODELHUB_DEFAULT_QUEUE = env_str("MODELHUB_DEFAULT_QUEUE", "default")
MODELHUB_TRAINING_QUEUE = env_str("MODELHUB_TRAINING_QUEUE", "training")
MODELHUB_ASSEMBLY_QUEUE = env_str("MODELHUB_ASSEMBLY_QUEUE", "assembly")
# The longest a request may hold a web thread waiting for a trial prediction: POST
# /api/assemblies/{id}/predict/ waits min("wait", this) seconds, then answers 202 with an id to poll.
MODELHUB_PREDICT_MAX_WAIT = env_int("MODELHUB_PREDICT_MAX_WAIT", 30)
# GET /metrics (Prometheus) is for staff tokens; 1 opens it to anyone, for a scraper on a private network.
MODELHUB_METRICS_PUBLIC = env_bool("MODELHUB_METRICS_PUBLIC", False)
# GET /api/heads/compare/ (and the compare page) reads two validated head files' weights in the web
# process only when they hold at most this many bytes together; a worker compares larger pairs
# (cached per pair of blobs), and the request waits for it at most MODELHUB_COMPARE_MAX_WAIT seconds.
MODELHUB_COMPARE_WEB_MAX_BYTES = env_int("MODELHUB_COMPARE_WEB_MAX_BYTES", 256 * 1024)
MODELHUB_COMPARE_MAX_WAIT = env_int("MODELHUB_COMPARE_MAX_WAIT", 10)
# Webhooks (releases): deliveries go to public addresses only, unless a host name or a
# CIDR is listed here (e.g. "127.0.0.1" or "hooks.internal,10.0.0.0/8" for a receiver inside).
MODELHUB_WEBHOOK_ALLOWED_HOSTS = env_list("MODELHUB_WEBHOOK_ALLOWED_HOSTS", [])
MODELHUB_WEBHOOK_TIMEOUT_SECONDS = env_float("MODELHUB_WEBHOOK_TIMEOUT_SECONDS", 5.0)
# A failed delivery is tried again after base, 4 x base, 16 x base, ... seconds (5 tries in all).
MODELHUB_WEBHOOK_RETRY_BASE_SECONDS = env_float("MODELHUB_WEBHOOK_RETRY_BASE_SECONDS", 10.0)
MODELHUB_WEBHOOK_QUEUE = env_str("MODELHUB_WEBHOOK_QUEUE", "default")
CELERY_TASK_ALWAYS_EAGER = False

# --- Cache and login throttling -------------------------------------------------------------


CACHES = caches_from_env(broker_url=CELERY_BROKER_URL, home=MODELHUB_HOME)
# Failed logins and token exchanges (POST /api/auth/token/, /login/, /admin/login/) allowed per
# username and per client address in one minute; then 429 with Retry-After until the minute ends,
# even with the right password (teams/login_throttle.py). 0 turns it off.
MODELHUB_LOGIN_FAILURES_PER_MINUTE = env_int("MODELHUB_LOGIN_FAILURES_PER_MINUTE", 10)
# The client address is REMOTE_ADDR. Behind a reverse proxy (nginx in docker-compose) that is the
# proxy's: list the proxies' addresses or networks here, and for requests from them the client is
# the right-most X-Forwarded-For entry that is not a proxy. X-Forwarded-For is read from nowhere else.
MODELHUB_TRUSTED_PROXIES = trusted_proxies()
# Tokens made by POST /api/auth/token/ (username + password) expire after this many days; 0: never.
MODELHUB_EXCHANGED_TOKEN_DAYS = env_int("MODELHUB_EXCHANGED_TOKEN_DAYS", 30)

# --- Logging ------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
