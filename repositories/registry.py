"""One place that builds every repository from Config, and answers readiness probes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.api_core import exceptions as google_exceptions
from google.cloud import firestore, storage
from requests.exceptions import RequestException

from repositories.archive import ArchiveRepository
from repositories.audit import AuditRepository
from repositories.clients import StoreSettings, make_firestore_client, make_storage_client
from repositories.conversations import ConversationRepository
from repositories.export_jobs import ExportJobRepository
from repositories.exports import ExportRepository
from repositories.insights import InsightsRepository
from repositories.migrations import MigrationRepository
from repositories.providers import ProviderRepository
from repositories.ratelimits import RateLimitRepository
from repositories.signins import SignInRepository
from service.domain.identity import Pseudonyms
from service.keys.crypto import KeyMaterial

_PROBE_TIMEOUT_SECONDS = 3.0


@dataclass
class Repositories:
    """The clients and every repository built on them; created once per process."""

    firestore: firestore.Client
    storage: storage.Client
    bucket: storage.Bucket
    providers: ProviderRepository
    audit: AuditRepository
    migrations: MigrationRepository
    archive: ArchiveRepository
    exports: ExportRepository
    export_jobs: ExportJobRepository
    conversations: ConversationRepository
    rate_limits: RateLimitRepository
    signins: SignInRepository
    insights: InsightsRepository

    def firestore_ready(self) -> str | None:
        """Return None when Firestore answers, else a short reason."""
        try:
            self.firestore.collection("_meta").document("ping").get(
                timeout=_PROBE_TIMEOUT_SECONDS, retry=None
            )
        except (google_exceptions.GoogleAPIError, ConnectionError, TimeoutError) as error:
            return type(error).__name__
        return None

    def storage_ready(self) -> str | None:
        """Return None when the archive bucket answers, else a short reason.

        Lists at most one object rather than reading the bucket's metadata: the runtime
        account holds object roles on the bucket (storage.objects.*), not storage.buckets.get.
        """
        try:
            blobs = self.bucket.list_blobs(
                max_results=1, prefix="keys/", timeout=_PROBE_TIMEOUT_SECONDS, retry=None
            )
            list(blobs)
        except google_exceptions.NotFound:
            return "bucket not found"
        except (google_exceptions.GoogleAPIError, RequestException, ConnectionError) as error:
            return type(error).__name__
        return None

    def ensure_bucket(self) -> None:
        """Create the archive bucket if missing (development and tests only)."""
        if not self.bucket.exists():
            self.storage.create_bucket(self.bucket.name)


def build_repositories(
    config: StoreSettings, make_keys: Callable[[storage.Bucket], KeyMaterial]
) -> Repositories:
    """Create the Google clients and every repository for this process."""
    firestore_client = make_firestore_client(config)
    storage_client = make_storage_client(config)
    bucket = storage_client.bucket(config.archive_bucket)
    keys = make_keys(bucket)
    archive = ArchiveRepository(firestore_client, bucket, keys)
    conversations = ConversationRepository(
        firestore_client, keys, Pseudonyms(config.pseudonym_key), index=archive
    )
    return Repositories(
        firestore=firestore_client,
        storage=storage_client,
        bucket=bucket,
        providers=ProviderRepository(firestore_client),
        audit=AuditRepository(firestore_client),
        migrations=MigrationRepository(firestore_client),
        archive=archive,
        exports=ExportRepository(firestore_client, bucket),
        export_jobs=ExportJobRepository(firestore_client),
        conversations=conversations,
        rate_limits=RateLimitRepository(firestore_client),
        signins=SignInRepository(firestore_client),
        insights=InsightsRepository(firestore_client, conversations),
    )
