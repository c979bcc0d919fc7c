"""Build the Google clients once per process, from Config."""

from __future__ import annotations

from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore, storage
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.adapters import HTTPAdapter

from service.config import Config
from service.errors import UnavailableError

# Errors that mean "the dependency did not answer", as opposed to a bug in our request.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    google_exceptions.ServiceUnavailable,
    google_exceptions.DeadlineExceeded,
    google_exceptions.InternalServerError,
    google_exceptions.TooManyRequests,
    google_exceptions.RetryError,
    google_exceptions.Aborted,
    ConnectionError,
    TimeoutError,
)


# The library's default retries for up to 120 s, holding a webhook (and Meta's retry clock)
# that long when Storage is down. A bounded budget answers 503 within seconds instead; every
# write we retry is guarded by a generation precondition, so a retry cannot overwrite.
STORAGE_CALL = {"timeout": 10.0, "retry": DEFAULT_RETRY.with_timeout(10.0)}


def make_firestore_client(config: Config) -> firestore.Client:
    """Return a Firestore client; against the emulator when FIRESTORE_EMULATOR_HOST is set."""
    # The library reads FIRESTORE_EMULATOR_HOST itself and then uses an insecure channel
    # with the emulator's owner credentials, so nothing more is needed here.
    return firestore.Client(project=config.project_id)


# Exports and the seal job fetch with 16 threads (plus the index reader): requests' default
# pool of 10 connections per host would open and discard a connection per extra request.
STORAGE_POOL_SIZE = 32


def make_storage_client(config: Config) -> storage.Client:
    """Return a Cloud Storage client; against fake-gcs-server when an emulator host is set."""
    if config.storage_emulator_host:
        client = storage.Client(
            project=config.project_id,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": config.storage_emulator_host},
        )
    else:
        client = storage.Client(project=config.project_id)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=STORAGE_POOL_SIZE)
    for scheme in ("https://", "http://"):
        client._http.mount(scheme, adapter)  # the client's own (authorized) session
    return client


def unavailable(what: str, error: Exception) -> UnavailableError:
    """Translate a transport error into the service's 503 error, naming the dependency."""
    return UnavailableError(f"{what} is unavailable ({type(error).__name__})")
