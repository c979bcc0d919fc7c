"""How a request reaches the components the app was built with (the shell puts them there),
typed as what the HTTP layer may use: the use cases' ports, plus sign-in and readiness."""

from __future__ import annotations

from typing import Protocol, cast

from flask import current_app

from repositories.insights import InsightsRepository
from repositories.providers import ProviderRepository
from repositories.signins import SignInRepository
from service.accounts.iap import IapVerifier
from service.accounts.ratelimit import SharedFailureLimiter
from service.archive.ports import ArchiveStores
from service.conversation.ports import ConversationDeps, ConversationSettings
from service.exports.jobs import ExportJobRunner
from service.exports.ports import ExportDeps, ExportSettings, ExportStores

EXTENSION_KEY = "intake"


class AppStores(ArchiveStores, ExportStores, Protocol):
    """Every store a request may lead to: the archive's, the exports', the accounts' and
    what the portal reads."""

    @property
    def providers(self) -> ProviderRepository: ...
    @property
    def signins(self) -> SignInRepository: ...
    @property
    def insights(self) -> InsightsRepository: ...


class AppSettings(ConversationSettings, ExportSettings, Protocol):
    @property
    def whatsapp_app_secret(self) -> str: ...
    @property
    def whatsapp_phone_number_id(self) -> str: ...
    @property
    def whatsapp_verify_token(self) -> str: ...
    @property
    def portal_idle_seconds(self) -> int: ...
    @property
    def portal_session_seconds(self) -> int: ...
    @property
    def is_production(self) -> bool: ...

    def secret_status(self) -> list[tuple[str, str]]: ...


class AppComponents(ConversationDeps, ExportDeps, Protocol):
    @property
    def repos(self) -> AppStores: ...
    @property
    def config(self) -> AppSettings: ...
    @property
    def auth_failures(self) -> SharedFailureLimiter: ...
    @property
    def iap(self) -> IapVerifier | None: ...
    @property
    def export_runner(self) -> ExportJobRunner: ...

    def readiness(self) -> dict[str, str | None]: ...


def current_components() -> AppComponents:
    """Return the components of the app handling the current request."""
    return cast("AppComponents", current_app.extensions[EXTENSION_KEY])
