"""Live Offers settings: every value comes from the environment, with a safe embedded default."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import dj_database_url

from config.env import envbool, envchoice, envfloat, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_SECRET_KEY = "dev-only-insecure-key-set-SECRET_KEY-in-production"

DEBUG = envbool("DEBUG", True)
SECRET_KEY = envstr("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG=0")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])

# --- Live Offers (README.md, "Configuration") -----------------------------------------------
PAUSE_SECONDS = envfloat("PAUSE_SECONDS", 30.0, minimum=0.1, maximum=86400)
OFFER_COOLDOWN_SECONDS = envfloat("OFFER_COOLDOWN_SECONDS", 600.0, minimum=0, maximum=30 * 86400)
HOLDOUT_PERCENT = envfloat("HOLDOUT_PERCENT", 10.0, minimum=0, maximum=100)
# Sessions offered or held out at random, wherever a rule's cart minimum and budget allow: the
# randomised decisions, with the holdout, that an uplift model learns from (streaming/policy.py).
EXPLORE_PERCENT = envfloat("EXPLORE_PERCENT", 5.0, minimum=0, maximum=100 - HOLDOUT_PERCENT)
RATE_EVENTS_PER_SECOND = envfloat("RATE_EVENTS_PER_SECOND", 50.0, minimum=0.001)
RATE_BURST = envint("RATE_BURST", 200, minimum=1)
# Output queued for one collector socket and not yet written; a client that lets more pile up
# (it does not read) is closed with 1008.
MAX_UNSENT_BYTES = envint("MAX_UNSENT_BYTES", 256 * 1024, minimum=16 * 1024)
# What one client (an address; see TRUSTED_PROXIES) may take of a server process, and what all
# clients may: a handshake past them is refused with 429 (per client) or 503 (in total).
MAX_SOCKETS_PER_CLIENT = envint("MAX_SOCKETS_PER_CLIENT", 100, minimum=1)
MAX_SOCKETS = envint("MAX_SOCKETS", 10_000, minimum=1)
# Each client's events, all its sessions together (shoppers behind one NAT share an address).
CLIENT_RATE_EVENTS_PER_SECOND = envfloat("CLIENT_RATE_EVENTS_PER_SECOND", 1000.0, minimum=0.001)
CLIENT_RATE_BURST = envint("CLIENT_RATE_BURST", 5000, minimum=1)
# Each site API key's redemptions at /api/redeem/, in each server process: a second, and the burst.
REDEEM_RATE_PER_SECOND = envfloat("REDEEM_RATE_PER_SECOND", 20.0, minimum=0.001)
REDEEM_BURST = envint("REDEEM_BURST", 100, minimum=1)
# Proxies whose X-Forwarded-For is believed (addresses or networks, comma-separated).
TRUSTED_PROXIES = envlist("TRUSTED_PROXIES", [])
# Embedded mode: live sessions held at most; past it, the least recently active is forgotten.
MAX_SESSIONS = envint("MAX_SESSIONS", 200_000, minimum=100)
# HTTP bodies past this are refused (413) before they are read (`/collect/`: 64 KiB; the admin's
# model upload, for staff: its own limit).
MAX_BODY_BYTES = envint("MAX_BODY_BYTES", 2**20, minimum=64 * 1024)
# HTTP: seconds a client has to send a request's headers, and an idle keep-alive connection lasts.
HEADER_TIMEOUT_SECONDS = envfloat("HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.5, maximum=300)
IDLE_TIMEOUT_SECONDS = envfloat("IDLE_TIMEOUT_SECONDS", 5.0, minimum=0.5, maximum=300)
SESSION_IDLE_SECONDS = envfloat("SESSION_IDLE_SECONDS", 1800.0, minimum=1)
SESSION_TOKEN_MAX_AGE = envint("SESSION_TOKEN_MAX_AGE", 86400, minimum=60)
METRICS_TOKEN = envstr("METRICS_TOKEN", "")
REDIS_URL = envstr("REDIS_URL", "")
# Redis mode: how long a worker holds a pause it claimed before another may take it over.
CLAIM_LEASE_SECONDS = envfloat("CLAIM_LEASE_SECONDS", 5.0, minimum=0.5, maximum=60)
# Records (decisions, marks, purchases) waiting for the database, past which no new pause is
# claimed: pauses wait rather than memory growing while the database is away.
RECORD_BACKLOG_MAX = envint("RECORD_BACKLOG_MAX", 50_000, minimum=100)
# Models: a decision's outcome is known once its session had this long to buy.
OUTCOME_WINDOW_SECONDS = envfloat("OUTCOME_WINDOW_SECONDS", 1800.0, minimum=1, maximum=30 * 86400)
# How often the worker measures drift (PSI of features and score over the last 24 hours).
DRIFT_CHECK_SECONDS = envfloat("DRIFT_CHECK_SECONDS", 3600.0, minimum=1, maximum=7 * 86400)
# Alerts are also POSTed here as JSON when set (chat webhooks take its `text` as is).
ALERT_WEBHOOK_URL = envstr("ALERT_WEBHOOK_URL", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "offers",
    "benchmarks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # last: turns a login attempt that axes refused into its lockout answer
    "axes.middleware.AxesMiddleware",
]

# Admin logins are throttled: after AXES_FAILURE_LIMIT wrong passwords for one user name from one
# address, that pair is refused (429) for AXES_COOLOFF_TIME; a success resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = envfloat("LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        # Under ASGI each HTTP request runs its ORM calls in a thread of its own, so a
        # connection kept past its request is never used again: it lingers until the garbage
        # collector finds it. PostgreSQL gets a pool instead (docs/DEPLOY.md).
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 0, minimum=0),
        conn_health_checks=True,
    )
}
# Embedded mode: the directory of the journal that holds what is decided, and what shoppers did
# with it, until it is in the database (replayed after a restart). Beside the SQLite database by
# default; "off" keeps it in memory only (a crash then loses what was not yet written).
_DEFAULT_JOURNAL = (
    f"{DATABASES['default']['NAME']}.records"
    if DATABASES["default"]["ENGINE"].endswith("sqlite3")
    and DATABASES["default"]["NAME"] not in ("", ":memory:")
    else str(BASE_DIR / "var" / "records")
)
RECORD_JOURNAL: str | None = envstr("RECORD_JOURNAL", _DEFAULT_JOURNAL)
if RECORD_JOURNAL == "off":
    RECORD_JOURNAL = None
# The clickstream at rest: the directory every applied event is written through to (daily
# JSON-lines files, one per process), kept EVENT_LOG_DAYS days; "off" keeps none.
EVENT_LOG: str | None = envstr(
    "EVENT_LOG",
    _DEFAULT_JOURNAL.removesuffix(".records") + ".events"
    if _DEFAULT_JOURNAL.endswith(".records")
    else str(BASE_DIR / "var" / "events"),
)
if EVENT_LOG == "off":
    EVENT_LOG = None
EVENT_LOG_DAYS = envint("EVENT_LOG_DAYS", 30, minimum=1, maximum=3650)
# PostgreSQL: the connections one process may hold at once, shared by its threads; 0: no pool
# (e.g. behind PgBouncer), one connection per request.
DATABASE_POOL_SIZE = envint("DATABASE_POOL_SIZE", 4, minimum=0, maximum=100)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_SIZE:
    if DATABASES["default"]["CONN_MAX_AGE"]:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "DATABASE_CONN_MAX_AGE must be 0 with the PostgreSQL pool (DATABASE_POOL_SIZE=0 "
            "turns the pool off)"
        )
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_SIZE,
        # A request waits this long for a free connection, then fails, rather than hanging.
        "timeout": 5,
        # A lost database is tried again for this long, then the attempt starts afresh at the
        # next request: its waits double from 1 s, so without this a database back after a
        # minute would be found half a minute later.
        "reconnect_timeout": 2,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis mode's channel layer, chosen by measurement (`manage.py bench layer`, docs/DEPLOY.md
# "Channel layer"): pubsub publishes each message to the servers subscribed at that moment;
# core keeps a queue per server process in Redis, at most CAPACITY messages each, for EXPIRY s.
CHANNEL_LAYER = envchoice("CHANNEL_LAYER", "pubsub", ("pubsub", "core"))
CHANNEL_LAYER_CAPACITY = envint("CHANNEL_LAYER_CAPACITY", 20_000, minimum=1)
CHANNEL_LAYER_EXPIRY = envint("CHANNEL_LAYER_EXPIRY", 120, minimum=1)
if REDIS_URL and urllib.parse.urlsplit(REDIS_URL).scheme.endswith("+cluster"):
    # A cluster keeps no queue of the core layer's kind on one shard: pub/sub over its masters.
    if CHANNEL_LAYER != "pubsub":
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("CHANNEL_LAYER=core needs one Redis, not a Redis Cluster")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "streaming.cluster_layer.ClusterPubSubChannelLayer",
            "CONFIG": {"cluster_url": REDIS_URL},
        }
    }
elif REDIS_URL and CHANNEL_LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": CHANNEL_LAYER_CAPACITY,
                "expiry": CHANNEL_LAYER_EXPIRY,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# The snippet is loaded by shops' pages on other origins.
WHITENOISE_ALLOW_ALL_ORIGINS = True
# Serve static/ even before `collectstatic` has run (a fresh clone, the test suite).
WHITENOISE_USE_FINDERS = True

# --- Production hardening; `DEBUG=0 manage.py check --deploy` is clean -------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    # channels-redis's loggers are offers/layer_reports.py's: it reads what they report.
    "loggers": {"daphne": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
