"""Configuration: read once from the environment into one frozen, typed object."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from service.accounts.iap import DEFAULT_CERTS_URL
from service.conversation.schedule import ReminderSettings
from service.errors import ConfigError
from service.shell.failpoints import spec_problems

APP_ENVS = ("development", "test", "production")
DEFAULT_GRAPH_API_URL = "https://graph.facebook.com/v21.0"
DEFAULT_TINK_KEYSET = "keys/intake-keyset.json"
DEFAULT_LINK_TTL_SECONDS = 900
DEFAULT_OUTBOX_LEASE_SECONDS = 180
# Each send waits ~0.3 s on the Graph API and ~0.05 s on Firestore to settle: 32 threads carry
# ~90 replies/s per process, above Meta's default 80 messages/s per number, even when one
# worker takes most of an instance's traffic (gunicorn's workers share one socket unevenly).
DEFAULT_SENDER_THREADS = 32
DEFAULT_SENDER_DRAIN_SECONDS = 5
# The portal's automatic logoff (HIPAA 164.312(a)(2)(iii)): idle, and however active.
DEFAULT_PORTAL_IDLE_SECONDS = 15 * 60
DEFAULT_PORTAL_SESSION_SECONDS = 12 * 3600
DEFAULT_IAP_CERTS_URL = DEFAULT_CERTS_URL
# Exports running at once in one process (gunicorn worker), unless EXPORT_CONCURRENCY says
# otherwise; never as many as its threads (see `exports_per_process`). Each export holds a
# request thread and, for XLSX, memory for its sheet, so the default is small.
DEFAULT_EXPORT_CONCURRENCY = 2
DEFAULT_EXPORT_CONCURRENCY_PER_ACCOUNT = 1
# A lease must outlast a round of sends (service/conversation/outbox.py), or a second process may
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
    "pseudonym_key": "dev-pseudonym-key-not-for-production-0000",
}
# The secrets (each is refused in production when guessable or equal to another one). Only the
# first three are ours to choose; Meta issues the app secret and the access token.
GENERATED_SECRETS = ("secret_key", "zip_password", "whatsapp_verify_token", "pseudonym_key")
SECRET_FIELDS = (*GENERATED_SECRETS, "whatsapp_app_secret", "meta_access_token")
# A guessable secret has few different characters or repeats a shorter piece ("aaaa…",
# "abab…", "changeme-changeme-…"). A random value passes: 16 random hex digits hold fewer
# than 6 different ones about 4 times in 100,000, longer or wider values practically never.
MIN_DISTINCT_SECRET_CHARACTERS = 6
_MIN_SECRET_LENGTH = {
    "secret_key": 32,
    "zip_password": 16,
    "whatsapp_app_secret": 16,
    "whatsapp_verify_token": 12,
    "pseudonym_key": 32,
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
    "pseudonym_key": "PSEUDONYM_KEY",
    "export_link_ttl_seconds": "EXPORT_LINK_TTL_SECONDS",
    "outbox_lease_seconds": "OUTBOX_LEASE_SECONDS",
    "sender_threads": "SENDER_THREADS",
    "sender_drain_seconds": "SENDER_DRAIN_SECONDS",
    "export_concurrency": "EXPORT_CONCURRENCY",
    "export_concurrency_per_account": "EXPORT_CONCURRENCY_PER_ACCOUNT",
    "gunicorn_threads": "GUNICORN_THREADS",
    "failpoints": "INTAKE_FAILPOINTS",
    "portal_enabled": "PORTAL_ENABLED",
    "trusted_proxy_hops": "TRUSTED_PROXY_HOPS",
    "iap_audience": "IAP_AUDIENCE",
    "iap_certs_url": "IAP_CERTS_URL",
    "portal_idle_seconds": "PORTAL_IDLE_SECONDS",
    "portal_session_seconds": "PORTAL_SESSION_SECONDS",
    "portal_url": "PORTAL_URL",
    "reminder_template": "WHATSAPP_REMINDER_TEMPLATE",
    "reminder_first_minutes": "REMINDER_FIRST_MINUTES",
    "reminder_second_minutes": "REMINDER_SECOND_MINUTES",
    "reminder_template_minutes": "REMINDER_TEMPLATE_MINUTES",
    "invitation_reminder_minutes": "INVITATION_REMINDER_MINUTES",
    "reminder_quiet_start_hour": "REMINDER_QUIET_START_HOUR",
    "reminder_quiet_end_hour": "REMINDER_QUIET_END_HOUR",
}
# Whole numbers: (smallest, largest, what they count) accepted.
_WHOLE_NUMBER_RANGES = {
    "export_link_ttl_seconds": (60, 7 * 24 * 3600, "seconds"),
    "outbox_lease_seconds": (1, 3600, "seconds"),
    "trusted_proxy_hops": (0, 5, "proxies"),
    # Cloud Run gives a stopping instance 10 s after SIGTERM; gunicorn's graceful timeout is 8.
    "sender_drain_seconds": (0, 8, "seconds"),
    "portal_idle_seconds": (60, DEFAULT_PORTAL_IDLE_SECONDS, "seconds"),
    "portal_session_seconds": (600, DEFAULT_PORTAL_SESSION_SECONDS, "seconds"),
    # Free-form reminders must land inside WhatsApp's 24-hour window: at most 23 h after the
    # patient's last message. The template goes once the window has closed, within 30 days.
    "reminder_first_minutes": (1, 23 * 60, "minutes"),
    "reminder_second_minutes": (1, 23 * 60, "minutes"),
    "reminder_template_minutes": (24 * 60, 30 * 24 * 60, "minutes"),
    "invitation_reminder_minutes": (1, 30 * 24 * 60, "minutes"),
    "reminder_quiet_start_hour": (0, 23, "hours (local time)"),
    "reminder_quiet_end_hour": (0, 23, "hours (local time)"),
}
# On/off settings and the words they accept.
_SWITCHES = {"portal_enabled": {"true": True, "1": True, "false": False, "0": False}}
# Cloud Run sets K_SERVICE in every container it runs; nothing else here does.
CLOUD_RUN_MARKER = "K_SERVICE"
# Cloud Run's front end is one proxy hop that appends the caller's address to X-Forwarded-For.
CLOUD_RUN_PROXY_HOPS = 1
# Whole numbers that count something: (smallest, largest) accepted.
_COUNT_RANGES = {
    "export_concurrency": (1, 64),
    "export_concurrency_per_account": (1, 64),
    "gunicorn_threads": (1, 1000),
    "sender_threads": (1, 256),
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
    # Names conversations by a keyed hash of the patient's phone or BSUID. Changing it loses
    # every conversation in progress (see docs/SECURITY.md): it is not rotated like the others.
    pseudonym_key: str = DEV_SECRETS["pseudonym_key"]
    export_link_ttl_seconds: int = DEFAULT_LINK_TTL_SECONDS
    outbox_lease_seconds: int = DEFAULT_OUTBOX_LEASE_SECONDS
    # Threads per process that send queued replies off the webhook's request, and how long a
    # stopping process goes on sending (see service/conversation/sender.py).
    sender_threads: int = DEFAULT_SENDER_THREADS
    sender_drain_seconds: int = DEFAULT_SENDER_DRAIN_SECONDS
    export_concurrency: int | None = None  # None: see exports_per_process
    export_concurrency_per_account: int = DEFAULT_EXPORT_CONCURRENCY_PER_ACCOUNT
    gunicorn_threads: int | None = None  # the Dockerfile passes it to gunicorn as --threads
    failpoints: str | None = None  # tests only: see service/shell/failpoints.py
    # Proxies in front of the app whose X-Forwarded-For/-Proto entries are trusted; 0 means the
    # socket peer is the client and those headers are ignored (see service/shell/app.py).
    trusted_proxy_hops: int = 0
    # Set on the portal's service behind IAP: the signed header's expected audience
    # (/projects/NUMBER/locations/REGION/services/NAME for Cloud Run's own IAP). Unset, the
    # portal signs people in with one-time links or their token instead.
    iap_audience: str | None = None
    iap_certs_url: str = DEFAULT_IAP_CERTS_URL
    portal_idle_seconds: int = DEFAULT_PORTAL_IDLE_SECONDS
    portal_session_seconds: int = DEFAULT_PORTAL_SESSION_SECONDS
    # Where people open the portal (https://portal.clinic.example): the start of the sign-in
    # links `accounts login-link` prints. The portal's own pages use the request's address.
    portal_url: str | None = None
    # False on the public service that takes Meta's webhook when the portal is deployed as
    # its own service behind IAP: /portal then does not exist there (404).
    portal_enabled: bool = True
    # Reminders for patients who stop answering (service/conversation/schedule.py): minutes
    # after the patient's last message (or the invitation), and their local quiet hours.
    reminder_template: str = "intake_reminder"
    reminder_first_minutes: int = 4 * 60
    reminder_second_minutes: int = 22 * 60
    reminder_template_minutes: int = 3 * 24 * 60
    invitation_reminder_minutes: int = 24 * 60
    reminder_quiet_start_hour: int = 21
    reminder_quiet_end_hour: int = 8

    @property
    def reminders(self) -> ReminderSettings:
        """The reminder schedule these settings describe."""
        return ReminderSettings(
            first=timedelta(minutes=self.reminder_first_minutes),
            second=timedelta(minutes=self.reminder_second_minutes),
            template=timedelta(minutes=self.reminder_template_minutes),
            invitation=timedelta(minutes=self.invitation_reminder_minutes),
            quiet_start_hour=self.reminder_quiet_start_hour,
            quiet_end_hour=self.reminder_quiet_end_hour,
        )

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
        # Each value is parsed to its field's type below: a str, or an int where one is counted.
        values: dict[str, Any] = {}
        for field, env_name in _ENV_NAMES.items():
            raw = environ.get(env_name)
            if raw is None or raw.strip() == "":
                continue
            raw = raw.strip()
            if field in _WHOLE_NUMBER_RANGES:
                smallest, largest, unit = _WHOLE_NUMBER_RANGES[field]
                if not raw.isdigit() or not smallest <= int(raw) <= largest:
                    problems.append(
                        f"{env_name} must be a whole number of {unit}, {smallest} to {largest}"
                    )
                    continue
                values[field] = int(raw)
            elif field in _SWITCHES:
                if raw.lower() not in _SWITCHES[field]:
                    problems.append(f"{env_name} must be true or false")
                    continue
                values[field] = _SWITCHES[field][raw.lower()]
            elif field in _COUNT_RANGES:
                smallest, largest = _COUNT_RANGES[field]
                if not raw.isdigit() or not smallest <= int(raw) <= largest:
                    problems.append(f"{env_name} must be a whole number, {smallest} to {largest}")
                    continue
                values[field] = int(raw)
            else:
                values[field] = raw
        if "trusted_proxy_hops" not in values and environ.get(CLOUD_RUN_MARKER):
            values["trusted_proxy_hops"] = CLOUD_RUN_PROXY_HOPS
        if "failpoints" in values:
            problems += spec_problems(str(values["failpoints"]))
        problems += _thread_problems(values)
        problems += _reminder_problems(values)
        app_env = values.get("app_env", "development")
        if app_env == "development" and environ.get(CLOUD_RUN_MARKER):
            # Development defaults are published secrets and the dev tools: never on Cloud Run.
            problems.append(
                f"APP_ENV is {'development' if 'app_env' in values else 'unset'} in a Cloud Run "
                f"container ({CLOUD_RUN_MARKER} is set): set APP_ENV=production"
            )
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

    def secret_status(self) -> list[tuple[str, str]]:
        """Name each secret and say whether it is set and safe, never quoting it."""
        status = []
        for field in SECRET_FIELDS:
            value = getattr(self, field)
            if value == DEV_SECRETS.get(field):
                state = "development value (refused in production)"
            elif secret_weakness(value):
                state = "weak (refused in production)"
            else:
                state = "set"
            status.append((_ENV_NAMES[field], state))
        return status

    def replace(self, **changes: Any) -> Config:
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


def _reminder_problems(values: dict[str, object]) -> list[str]:
    """Refuse a second reminder that would not come after the first."""
    first = values.get("reminder_first_minutes", Config.reminder_first_minutes)
    second = values.get("reminder_second_minutes", Config.reminder_second_minutes)
    if isinstance(first, int) and isinstance(second, int) and first >= second:
        return [
            f"REMINDER_FIRST_MINUTES ({first}) must be less than REMINDER_SECOND_MINUTES ({second})"
        ]
    return []


def _production_problems(values: dict[str, object]) -> list[str]:
    """Return every reason these settings are unsafe for production."""
    problems = []
    required = (
        "project_id archive_bucket meta_access_token whatsapp_phone_number_id "
        "whatsapp_app_secret whatsapp_verify_token whatsapp_start_template kms_key_uri "
        "zip_password secret_key pseudonym_key"
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
    problems += _secret_problems(values)
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
    iap_certs_url = values.get("iap_certs_url", DEFAULT_IAP_CERTS_URL)
    if isinstance(iap_certs_url, str) and not iap_certs_url.startswith("https://"):
        problems.append("IAP_CERTS_URL must be an https:// URL in production")
    graph_api_url = values.get("graph_api_url", DEFAULT_GRAPH_API_URL)
    if isinstance(graph_api_url, str) and not graph_api_url.startswith("https://"):
        problems.append("GRAPH_API_URL must be an https:// URL in production")
    return problems


def secret_weakness(value: str) -> str | None:
    """Return why a secret is guessable, or None; the reason never quotes the value."""
    if len(set(value)) < MIN_DISTINCT_SECRET_CHARACTERS:
        return f"has fewer than {MIN_DISTINCT_SECRET_CHARACTERS} different characters"
    if _shortest_period(value) <= len(value) // 2:
        return "repeats a shorter piece"
    return None


def _shortest_period(value: str) -> int:
    """Return the smallest p with value[i] == value[i + p] for every i (Knuth-Morris-Pratt)."""
    border = [0] * len(value)
    for index in range(1, len(value)):
        length = border[index - 1]
        while length and value[index] != value[length]:
            length = border[length - 1]
        border[index] = length + (value[index] == value[length])
    return len(value) - (border[-1] if value else 0)


def _secret_problems(values: dict[str, object]) -> list[str]:
    """Refuse guessable secrets, and any two secrets that are equal.

    Equal secrets share their fate: a daily zip password cracked offline (its master is
    ZIP_PASSWORD) would then also forge download links (SECRET_KEY), and so on.
    """
    problems = []
    present = {
        field: values[field] for field in SECRET_FIELDS if isinstance(values.get(field), str)
    }
    for field, value in present.items():
        weakness = secret_weakness(str(value))
        if weakness:
            problems.append(
                f"{_ENV_NAMES[field]} {weakness}: use `python -m service secrets generate`"
            )
    fields = list(present)
    for position, field in enumerate(fields):
        for other in fields[position + 1 :]:
            if present[field] == present[other]:
                problems.append(f"{_ENV_NAMES[field]} and {_ENV_NAMES[other]} must differ")
    return problems


def generate_secrets() -> dict[str, str]:
    """Return fresh values for the secrets an operator chooses, by environment variable name."""
    sizes = {  # random bytes
        "secret_key": 48,
        "zip_password": 32,
        "whatsapp_verify_token": 24,
        "pseudonym_key": 32,
    }
    while True:
        generated = {field: secrets.token_urlsafe(sizes[field]) for field in GENERATED_SECRETS}
        # A random value all but never fails the checks; drawing again makes it never.
        if not _secret_problems(dict(generated)):
            return {_ENV_NAMES[field]: value for field, value in generated.items()}
