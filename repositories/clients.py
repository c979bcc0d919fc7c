"""Build the Google clients once per process, from Config."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, TypedDict

from google.api_core import exceptions as google_exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore, storage
from google.cloud.storage import Bucket as Bucket  # re-exported: the shell hands one on
from google.cloud.storage.retry import DEFAULT_RETRY
from requests.adapters import HTTPAdapter
from requests.exceptions import RequestException

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
# A Cloud Storage call fails these ways too: the client speaks HTTP through requests.
STORAGE_ERRORS: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, RequestException)
_NO_ANSWER = (*TRANSIENT_ERRORS, RequestException, auth_exceptions.TransportError)

# Everything the Google clients and their transports raise when Firestore or Cloud Storage
# fails or refuses: the transient errors above, and also refusals a caller cannot fix (a
# document over Firestore's 1 MiB limit is InvalidArgument, an IAM change PermissionDenied),
# and credentials that cannot be refreshed. service/shell/app.py answers each with 503.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    google_exceptions.GoogleAPIError,
    auth_exceptions.TransportError,
    auth_exceptions.RefreshError,
    RequestException,
    ConnectionError,
    TimeoutError,
)


# The library's default retries for up to 120 s, holding a webhook (and Meta's retry clock)
# that long when Storage is down. A bounded budget answers 503 within seconds instead; every
# write we retry is guarded by a generation precondition, so a retry cannot overwrite.
STORAGE_CALL = {"timeout": 10.0, "retry": DEFAULT_RETRY.with_timeout(10.0)}
# An upload may take longer than a read to answer (a large export zip); its retries still end
# within seconds when Storage is down.
STORAGE_UPLOAD_CALL = {"timeout": (10.0, 120.0), "retry": DEFAULT_RETRY.with_timeout(10.0)}


class FirestoreCall(TypedDict):
    """The retry and timeout keyword arguments of one Firestore call."""

    timeout: float
    retry: Retry | None


# The library's default Firestore retries last up to 300 s; a request waiting on one (a
# provider's token lookup, an audit event) answers 503 within seconds instead.
FIRESTORE_CALL: FirestoreCall = {
    "timeout": 5.0,
    "retry": Retry(
        predicate=if_exception_type(
            google_exceptions.ServiceUnavailable, google_exceptions.DeadlineExceeded
        ),
        timeout=5.0,
    ),
}


class StoreSettings(Protocol):
    """The settings the stores are built from (the service's Config has them all)."""

    @property
    def project_id(self) -> str: ...
    @property
    def storage_emulator_host(self) -> str | None: ...
    @property
    def archive_bucket(self) -> str: ...
    @property
    def pseudonym_key(self) -> str: ...


def make_firestore_client(config: StoreSettings) -> firestore.Client:
    """Return a Firestore client; against the emulator when FIRESTORE_EMULATOR_HOST is set."""
    # The library reads FIRESTORE_EMULATOR_HOST itself and then uses an insecure channel
    # with the emulator's owner credentials, so nothing more is needed here.
    return firestore.Client(project=config.project_id)


# Exports and the seal job fetch with 16 threads (plus the index reader): requests' default
# pool of 10 connections per host would open and discard a connection per extra request.
STORAGE_POOL_SIZE = 32


def make_storage_client(config: StoreSettings) -> storage.Client:
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


@contextlib.contextmanager
def translated(what: str, errors: tuple[type[Exception], ...] = TRANSIENT_ERRORS) -> Iterator[None]:
    """The one place a store's failure becomes the service's: a call that did not get an
    answer from `what` raises UnavailableError (503 to a caller, one line to an operator)."""
    try:
        yield
    except errors as error:
        raise unavailable(what, error) from error


def unavailable(what: str, error: Exception) -> UnavailableError:
    """Translate a transport error into the service's 503 error, naming the dependency."""
    return UnavailableError(f"{what} is unavailable ({type(error).__name__})")


def is_refusal(error: Exception) -> bool:
    """Tell a request the dependency refused (and will refuse again) from one it never answered."""
    return not isinstance(error, _NO_ANSWER)


def dependency_unavailable(error: Exception) -> UnavailableError:
    """Translate any of DEPENDENCY_ERRORS that escaped a repository into the service's 503.

    The message names the error's type only: a Google error's text can quote a document path
    or a request, which has no place in an answer.
    """
    if not is_refusal(error):
        return unavailable("Firestore or Cloud Storage", error)
    return UnavailableError(
        f"Firestore or Cloud Storage refused the request ({type(error).__name__})"
    )
