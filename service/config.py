"""Configuration: read once from the environment into one frozen, typed object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from service.errors import ConfigError
from service.failpoints import spec_problems

APP_ENVS = ("development", "test", "production")
DEFAULT_GRAPH_API_URL = "https://graph.facebook.com/v21.0"
DEFAULT_TINK_KEYSET = "keys/intake-keyset.json"
DEFAULT_LINK_TTL_SECONDS = 900
DEFAULT_OUTBOX_LEASE_SECONDS = 180
# Exports running at once in one process (gunicorn worker), unless EXPORT_CONCURRENCY says
# otherwise; never as many as its threads (see `exports_per_process`). Each export holds a
# request thread and, for XLSX, memory for its sheet, so the default is small.
DEFAULT_EXPORT_CONCURRENCY = 2
DEFAULT_EXPORT_CONCURRENCY_PER_ACCOUNT = 1
# A lease must outlast a round of sends (see service/conversation.py), or a second process may
# send a reply the first one is still sending.
MIN_PRODUCTION_OUTBOX_LEASE_SECONDS = 120

# Development-only values, so `make run` works from a fresh clone. Production refuses each of
# them: a deployment that forgot to set a secret must not start with a value published here.
DEV_SECRETS = {
    "secret_key": "dev-secret-key-not-for-production-000000",
    "zip_password": "dev-zip-master-password",
    "whatsapp_app_secret": "dev-app-secret",
    "whatsapp_verify_token": "dev-verify-token",
    "meta_access_token": "dev-access-token",
}
_MIN_SECRET_LENGTH = {
    "secret_key": 32,
    "zip_password": 16,
    "whatsapp_app_secret": 16,
    "whatsapp_verify_token": 12,
}
_ENV_NAMES = {
    "app_env": "APP_ENV",
    "project_id": "GOOGLE_CLOUD_PROJECT",
    "firestore_emulator_host": "FIRESTORE_EMULATOR_HOST",
    "storage_emulator_host": "STORAGE_EMULATOR_HOST",
    "archive_bucket": "ARCHIVE_BUCKET",
    "meta_access_token": "META_ACCESS_TOKEN",
    "whatsapp_phone_number_id": "WHATSAPP_PHONE_NUMBER_ID",
    "whatsapp_app_secret": "WHATSAPP_APP_SECRET",
    "whatsapp_verify_token": "WHATSAPP_VERIFY_TOKEN",
    "whatsapp_start_template": "WHATSAPP_START_TEMPLATE",
    "graph_api_url": "GRAPH_API_URL",
    "kms_key_uri": "KMS_KEY_URI",
    "kms_endpoint": "KMS_ENDPOINT",
    "tink_keyset": "TINK_KEYSET",
    "local_keyset_path": "LOCAL_KEYSET_PATH",
    "zip_password": "ZIP_PASSWORD",
    "secret_key": "SECRET_KEY",
    "export_link_ttl_seconds": "EXPORT_LINK_TTL_SECONDS",
    "outbox_lease_seconds": "OUTBOX_LEASE_SECONDS",
    "export_concurrency": "EXPORT_CONCURRENCY",
    "export_concurrency_per_account": "EXPORT_CONCURRENCY_PER_ACCOUNT",
    "gunicorn_threads": "GUNICORN_THREADS",
    "failpoints": "INTAKE_FAILPOINTS",
}
# Whole numbers of seconds: (smallest, largest) accepted.
_SECONDS_RANGES = {
    "export_link_ttl_seconds": (60, 7 * 24 * 3600),
    "outbox_lease_seconds": (1, 3600),
}
# Whole numbers that count something: (smallest, largest) accepted.
_COUNT_RANGES = {
    "export_concurrency": (1, 64),
    "export_concurrency_per_account": (1, 64),
    "gunicorn_threads": (1, 1000),
}


@dataclass(frozen=True)
class Config:
    """Every setting the service reads; built by `from_env` or directly in tests."""

    app_env: str = "development"
    project_id: str = "intake-local"
    archive_bucket: str = "intake-archive"
    firestore_emulator_host: str | None = None
    storage_emulator_host: str | None = None
    meta_access_token: str = DEV_SECRETS["meta_access_token"]
    whatsapp_phone_number_id: str = "100000000000001"
    whatsapp_app_secret: str = DEV_SECRETS["whatsapp_app_secret"]
    whatsapp_verify_token: str = DEV_SECRETS["whatsapp_verify_token"]
    whatsapp_start_template: str = "intake_start"
    graph_api_url: str = DEFAULT_GRAPH_API_URL
    kms_key_uri: str | None = None
    kms_endpoint: str | None = None
    tink_keyset: str = DEFAULT_TINK_KEYSET
    local_keyset_path: str | None = None
    zip_password: str = DEV_SECRETS["zip_password"]
    secret_key: str = DEV_SECRETS["secret_key"]
    export_link_ttl_seconds: int = DEFAULT_LINK_TTL_SECONDS
    outbox_lease_seconds: int = DEFAULT_OUTBOX_LEASE_SECONDS
    export_concurrency: int | None = None  # None: see exports_per_process
    export_concurrency_per_account: int = DEFAULT_EXPORT_CONCURRENCY_PER_ACCOUNT
    gunicorn_threads: int | None = None  # the Dockerfile passes it to gunicorn as --threads
    failpoints: str | None = None  # tests only: see service/failpoints.py

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def exports_per_process(self) -> int:
        """How many exports may run at once in this process.

        EXPORT_CONCURRENCY when set (from_env refuses one that leaves no thread free);
        otherwise the default, lowered when needed to leave one of GUNICORN_THREADS to the
        webhook. With a single thread nothing can be left: an export then holds the process.
        """
        if self.export_concurrency is not None:
            return self.export_concurrency
        if self.gunicorn_threads is None:
            return DEFAULT_EXPORT_CONCURRENCY
        return max(1, min(DEFAULT_EXPORT_CONCURRENCY, self.gunicorn_threads - 1))

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Build the config from environment variables; raise ConfigError listing every problem."""
        problems: list[str] = []
        values: dict[str, object] = {}
        for field, env_name in _ENV_NAMES.items():
            raw = environ.get(env_name)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            if field in _SECONDS_RANGES:
                smallest, largest = _SECONDS_RANGES[field]
                if not raw.isdigit() or not smallest <= int(raw) <= largest:
                    problems.append(
                        f"{env_name} must be a whole number of seconds, {smallest} to {largest}"
                    )
                    continue
                values[field] = int(raw)
            elif field in _COUNT_RANGES:
                smallest, largest = _COUNT_RANGES[field]
                if not raw.isdigit() or not smallest <= int(raw) <= largest:
                    problems.append(f"{env_name} must be a whole number, {smallest} to {largest}")
                    continue
                values[field] = int(raw)
            else:
                values[field] = raw
        if "failpoints" in values:
            problems += spec_problems(str(values["failpoints"]))
        problems += _thread_problems(values)
        app_env = values.get("app_env", "development")
        if app_env not in APP_ENVS:
            problems.append(f"APP_ENV must be one of {', '.join(APP_ENVS)}")
            values.pop("app_env")
        if app_env == "production":
            problems += _production_problems(values)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """Return the environment variables that rebuild this config (for child processes)."""
        values = dataclasses.asdict(self)
        return {
            env_name: str(values[field])
            for field, env_name in _ENV_NAMES.items()
            if values[field] is not None
        }

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)


def _thread_problems(values: dict[str, object]) -> list[str]:
    """Refuse an export limit that would let exports take every request thread."""
    exports, threads = values.get("export_concurrency"), values.get("gunicorn_threads")
    if isinstance(exports, int) and isinstance(threads, int) and exports >= threads:
        return [
            f"EXPORT_CONCURRENCY ({exports}) must be less than GUNICORN_THREADS ({threads}), "
            "so a thread stays free for the webhook while exports run"
        ]
    return []


def _production_problems(values: dict[str, object]) -> list[str]:
    """Return every reason these settings are unsafe for production."""
    problems = []
    required = (
        "project_id archive_bucket meta_access_token whatsapp_phone_number_id "
        "whatsapp_app_secret whatsapp_verify_token whatsapp_start_template kms_key_uri "
        "zip_password secret_key"
    ).split()
    for field in required:
        if field not in values:
            problems.append(f"{_ENV_NAMES[field]} is required in production")
    for field, minimum in _MIN_SECRET_LENGTH.items():
        value = values.get(field)
        if isinstance(value, str) and len(value) < minimum:
            problems.append(f"{_ENV_NAMES[field]} must be at least {minimum} characters")
    for field, dev_value in DEV_SECRETS.items():
        if values.get(field) == dev_value:
            problems.append(f"{_ENV_NAMES[field]} holds the published development value")
    for field in (
        "local_keyset_path",
        "firestore_emulator_host",
        "storage_emulator_host",
        "failpoints",  # a test-only switch that kills the process on purpose
    ):
        if field in values:
            problems.append(f"{_ENV_NAMES[field]} must not be set in production")
    lease = values.get("outbox_lease_seconds")
    if isinstance(lease, int) and lease < MIN_PRODUCTION_OUTBOX_LEASE_SECONDS:
        problems.append(
            f"OUTBOX_LEASE_SECONDS must be at least {MIN_PRODUCTION_OUTBOX_LEASE_SECONDS} in "
            "production (shorter leases let two processes send the same reply)"
        )
    kms_key_uri = values.get("kms_key_uri")
    if isinstance(kms_key_uri, str) and not kms_key_uri.startswith("gcp-kms://projects/"):
        problems.append("KMS_KEY_URI must look like gcp-kms://projects/.../cryptoKeys/...")
    kms_endpoint = values.get("kms_endpoint")
    if isinstance(kms_endpoint, str) and not kms_endpoint.startswith("https://"):
        problems.append("KMS_ENDPOINT must be an https:// URL in production")
    graph_api_url = values.get("graph_api_url", DEFAULT_GRAPH_API_URL)
    if isinstance(graph_api_url, str) and not graph_api_url.startswith("https://"):
        problems.append("GRAPH_API_URL must be an https:// URL in production")
    return problems
