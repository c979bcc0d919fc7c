"""Everything a request or CLI command needs, built once per process from Config."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from repositories.keysets import KeysetObjectStore
from repositories.registry import Repositories, build_repositories
from service.accounts.iap import IapVerifier
from service.accounts.ratelimit import SharedFailureLimiter
from service.conversation.sender import ReplySender
from service.errors import ConfigError, KeysetMissingError
from service.exports.jobs import ExportJobRunner
from service.exports.slots import ExportSlots
from service.keys.crypto import CleartextCodec, FileKeysetStore, KeyMaterial, KmsWrappedCodec
from service.keys.kms import KmsAead, make_kms_client
from service.shell.config import Config
from service.shell.failpoints import Failpoints
from service.shell.readiness import CachedProbe
from service.whatsapp.graph import GraphClient

if TYPE_CHECKING:
    from repositories.clients import Bucket

# KMS is called once per process (and at rotation): a bounded wait keeps start-up and
# readiness probes answering when KMS is down.
_KMS_TIMEOUT = 5.0


@dataclass
class Components:
    config: Config
    repos: Repositories
    keys: KeyMaterial
    graph: GraphClient
    # Failed provider logins and failed download links, each limited per client address
    # across every instance and worker (counted in Firestore `rate_limits`).
    auth_failures: SharedFailureLimiter
    download_failures: SharedFailureLimiter
    # Firestore and Storage probed over the network at most once per few seconds per process.
    backend_readiness: CachedProbe
    export_slots: ExportSlots  # exports running in this process, in all and per account
    failpoints: Failpoints = field(default_factory=Failpoints)  # armed only by fault tests
    # The portal's check of IAP's signed header; None when the portal is not behind IAP.
    iap: IapVerifier | None = None
    # Sends queued replies off the webhook's request; its threads start on first use in each
    # process (gunicorn forks workers after the app is built).
    sender: ReplySender = field(init=False)
    # Builds the export jobs the portal queues, off the request (one at a time per process).
    export_runner: ExportJobRunner = field(init=False)

    def __post_init__(self) -> None:
        self.sender = build_sender(self)
        self.export_runner = ExportJobRunner(self)

    def readiness(self) -> dict[str, str | None]:
        """Return each dependency's problem, or None where it answers.

        The key material and the Graph token are read from memory on every call (the keys
        retry a failed load at most every few seconds on their own), so a token that works
        again or a keyset just loaded shows at once; only the network probes are cached.
        """
        return {
            **self.backend_readiness.check(),
            "keys": self.keys.ready(),
            "graph": self.graph.ready(),
        }


def build_components(config: Config) -> Components:
    """Create the clients, repositories and key material for this process."""
    if config.failpoints and config.is_production:
        # Config.from_env refuses this already; a Config built in code must not slip past.
        raise ConfigError(["INTAKE_FAILPOINTS must not be set in production"])
    repos = build_repositories(config, lambda bucket: build_key_material(config, bucket))
    graph = GraphClient(
        config.graph_api_url,
        config.whatsapp_phone_number_id,
        config.meta_access_token,
        connections=config.sender_threads + (config.gunicorn_threads or 8),
    )
    return Components(
        config=config,
        repos=repos,
        keys=repos.archive.keys,
        graph=graph,
        auth_failures=build_failure_limiter(config, repos, "auth"),
        download_failures=build_failure_limiter(config, repos, "download"),
        backend_readiness=build_backend_readiness(repos),
        export_slots=build_export_slots(config),
        failpoints=Failpoints(config.failpoints),
        iap=IapVerifier(config.iap_audience, config.iap_certs_url) if config.iap_audience else None,
    )


def build_sender(components: Components) -> ReplySender:
    """Return this process's sender of queued replies."""
    config = components.config
    return ReplySender(components, config.sender_threads, config.sender_drain_seconds)


def build_backend_readiness(
    repos: Repositories, clock: Callable[[], float] = time.monotonic
) -> CachedProbe:
    """Return the cached probe of Firestore and the archive bucket."""

    def probe() -> dict[str, str | None]:
        return {"firestore": repos.firestore_ready(), "storage": repos.storage_ready()}

    return CachedProbe(probe, clock)


def build_failure_limiter(config: Config, repos: Repositories, scope: str) -> SharedFailureLimiter:
    """Return a limiter of failed attempts per address, shared through Firestore."""
    return SharedFailureLimiter(repos.rate_limits, config.secret_key, scope)


def build_export_slots(config: Config) -> ExportSlots:
    """Return this process's limits on exports running at once."""
    return ExportSlots(config.exports_per_process, config.export_concurrency_per_account)


def build_key_material(config: Config, bucket: Bucket) -> KeyMaterial:
    """Choose where the keyset lives: wrapped by KMS in the bucket, or a development file."""
    key_uri = config.kms_key_uri
    if key_uri:
        object_name = config.tink_keyset

        def kms_codec() -> KmsWrappedCodec:
            kek = KmsAead(make_kms_client(config.kms_endpoint), key_uri, timeout=_KMS_TIMEOUT)
            # Bound to its object name: a wrapped keyset copied elsewhere will not unwrap.
            return KmsWrappedCodec(kek, object_name.encode())

        return KeyMaterial(KeysetObjectStore(bucket, object_name), kms_codec)
    if config.local_keyset_path and not config.is_production:
        return KeyMaterial(
            FileKeysetStore(config.local_keyset_path), CleartextCodec, create_if_missing=True
        )
    return KeyMaterial(_UnconfiguredStore(), CleartextCodec)


class _UnconfiguredStore:
    description = "nowhere (set KMS_KEY_URI, or LOCAL_KEYSET_PATH in development)"

    def read(self) -> None:
        return None

    def create(self, data: bytes) -> None:
        raise KeysetMissingError(f"no keyset store configured: {self.description}")

    def replace(self, data: bytes, generation: int | None) -> None:
        self.create(data)
