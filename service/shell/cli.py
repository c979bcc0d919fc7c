"""The operator CLI (`python -m service ...`): thin commands over the service functions."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import click
from flask import current_app, has_app_context
from flask.cli import ScriptInfo

from blueprints.context import EXTENSION_KEY
from migrations.runner import MigrationError, run_migrations
from service.accounts import people as people_service
from service.accounts import providers as provider_service
from service.accounts import signin as signin_service
from service.archive import records as archive_service
from service.conversation import support as support_service
from service.conversation.stats import reminder_stats
from service.domain.passwords import export_password, today_utc
from service.errors import ConfigError, ServiceError
from service.exports import purge as export_purge
from service.keys.crypto import KeyInfo
from service.shell.components import Components, build_components
from service.shell.config import Config, generate_secrets
from service.shell.logging import configure_logging

# Errors an operator can act on: printed as one line, exit status 1, no traceback.
_OPERATOR_ERRORS = (ServiceError, ConfigError, MigrationError)


class _OperatorGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:  # click.Group.invoke returns Any too
        try:
            return super().invoke(ctx)
        except _OPERATOR_ERRORS as error:
            raise click.ClickException(str(error)) from error


class ComponentsFromEnvironment:
    """Build the components from the environment when a command first needs them.

    `secrets generate` needs none, and must work before any secret is set (a production
    environment without its secrets is refused by Config.from_env).
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._built: Components | None = None

    def get(self) -> Components:
        if self._built is None:
            config = Config.from_env(self._environ)
            # Logs go to stderr so a command's own output (a token, a password) stays clean.
            configure_logging(config.project_id, stream=sys.stderr)
            self._built = build_components(config)
        return self._built


def _components(ctx: click.Context) -> Components:
    root = ctx.find_root()
    if isinstance(root.obj, Components):
        return root.obj
    if isinstance(root.obj, ComponentsFromEnvironment):
        return root.obj.get()
    if has_app_context():
        return current_app.extensions[EXTENSION_KEY]
    if isinstance(root.obj, ScriptInfo):
        return root.obj.load_app().extensions[EXTENSION_KEY]
    raise click.ClickException("no application configured")


@click.group(cls=_OperatorGroup)
def cli() -> None:
    """Operate the intake service: migrations, provider accounts, keys, records, exports,
    secrets."""


@cli.command()
@click.option("--dry-run", is_flag=True, help="List the pending migrations; apply nothing.")
@click.pass_context
def migrate(ctx: click.Context, dry_run: bool) -> None:
    """Apply pending data migrations in order."""
    report = run_migrations(_components(ctx), dry_run=dry_run)
    if dry_run:
        click.echo(f"pending: {', '.join(report.pending) or 'none'}")
    else:
        click.echo(f"applied: {', '.join(report.applied) or 'none'}")


@cli.command("export-password")
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="UTC day (default today).")
@click.pass_context
def export_password_command(ctx: click.Context, day: datetime | None) -> None:
    """Print the export zip password for a UTC day."""
    wanted = day.date() if day else today_utc()
    daily = export_password(_components(ctx).config.zip_password, wanted)
    click.echo(daily.password)
    click.echo(
        f"valid for {wanted.isoformat()} (UTC), until {daily.valid_until.isoformat()}", err=True
    )


@cli.group(cls=_OperatorGroup)
def conversations() -> None:
    """Find a patient's conversation for support (never their answers)."""


@conversations.command("find")
@click.argument("who")
@click.pass_context
def find_conversation_command(ctx: click.Context, who: str) -> None:
    """Print the conversation of a phone number (+34612345678) or a BSUID (ES.…)."""
    found = support_service.find_conversation(_components(ctx), who)
    click.echo(f"conversation  {found['conversation']}")
    for name, value in found["fields"].items():
        if value is not None:
            click.echo(f"{name:<14}{json.dumps(value) if isinstance(value, dict) else value}")


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per step.")
@click.pass_context
def stats_command(ctx: click.Context, as_json: bool) -> None:
    """Show per step how many patients stopped there, were reminded, completed after it."""
    rows = reminder_stats(_components(ctx))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.__dict__))
        return
    click.echo(f"{'step':<16} {'stopped':>8} {'reminded':>9} {'completed after reminder':>25}")
    for row in rows:
        click.echo(
            f"{row.step:<16} {row.stopped:>8} {row.reminded:>9} {row.completed_after_reminder:>25}"
        )


@cli.group(cls=_OperatorGroup)
def keys() -> None:
    """Manage the Tink keyset that encrypts archived records."""


def _print_keys(key_infos: list[KeyInfo]) -> None:
    for key in key_infos:
        click.echo(f"{key.key_id:>10}  {key.status:8}  {'primary' if key.primary else ''}".rstrip())


@keys.command("init")
@click.pass_context
def keys_init(ctx: click.Context) -> None:
    """Create and store the wrapped keyset (refuses to overwrite one)."""
    components = _components(ctx)
    _print_keys(components.keys.init())
    click.echo(f"keyset stored at {components.keys.store.description}", err=True)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List key ids, their status and which is primary."""
    _print_keys(_components(ctx).keys.list_keys())


@keys.command("rotate")
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Add a new key and make it primary; earlier records still decrypt."""
    _print_keys(_components(ctx).keys.rotate())
    click.echo("new records use the new primary; run `keys reencrypt` to move old ones", err=True)


@keys.command("reencrypt")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many records.")
@click.pass_context
def keys_reencrypt(ctx: click.Context, limit: int | None) -> None:
    """Re-encrypt records still under an older key with the primary (resumable)."""
    report = archive_service.reencrypt_records(_components(ctx), limit=limit)
    click.echo(
        f"examined: {report.examined}  reencrypted: {report.reencrypted}  "
        f"primary: {report.primary_key_id}"
    )


@cli.group(cls=_OperatorGroup)
def records() -> None:
    """Operate on archived intake records."""


@records.command("erase")
@click.argument("record_id")
@click.pass_context
def records_erase(ctx: click.Context, record_id: str) -> None:
    """Erase one archived record (its object is deleted; the index keeps no PHI)."""
    archive_service.erase_record(_components(ctx), record_id, actor="operator:cli")
    click.echo(f"erased: {record_id}")


@records.command("rebuild-index")
@click.pass_context
def records_rebuild_index(ctx: click.Context) -> None:
    """Recreate missing index entries from the archived objects."""
    report = archive_service.rebuild_index(_components(ctx))
    click.echo(f"objects: {report.objects}  restored: {report.restored}")


@records.command("seal")
@click.option(
    "--day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Seal this UTC day only (default: every complete day not sealed yet).",
)
@click.pass_context
def records_seal(ctx: click.Context, day: datetime | None) -> None:
    """Copy each complete day's records into one sealed batch, for fast exports (run daily)."""
    reports = archive_service.seal_days(_components(ctx), day=day.date() if day else None)
    for report in reports:
        if report.sealed:
            outcome = f"sealed {report.records} records"
        elif report.already_sealed:
            outcome = "already sealed"
        else:
            outcome = "; ".join(report.notes) or "not sealed"
        click.echo(f"{report.day.isoformat()}  {outcome}")
    sealed = sum(1 for report in reports if report.sealed)
    click.echo(f"days examined: {len(reports)}  sealed: {sealed}")


@cli.group(cls=_OperatorGroup)
def exports() -> None:
    """Manage export zips."""


@exports.command("purge")
@click.option(
    "--older-than-hours",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="Delete export zips created more than this many hours ago.",
)
@click.pass_context
def exports_purge(ctx: click.Context, older_than_hours: int) -> None:
    """Delete old export zips and mark their exports purged (run daily)."""
    report = export_purge.purge_exports(
        _components(ctx), older_than=timedelta(hours=older_than_hours)
    )
    click.echo(f"purged: {report.exports}  orphans deleted: {report.orphans}")


@cli.group("secrets", cls=_OperatorGroup)
def secrets_group() -> None:
    """Generate the secrets an operator chooses."""


@secrets_group.command("generate")
def secrets_generate() -> None:
    """Print fresh SECRET_KEY, ZIP_PASSWORD and WHATSAPP_VERIFY_TOKEN values as NAME=value."""
    for name, value in generate_secrets().items():
        click.echo(f"{name}={value}")
    click.echo(
        "META_ACCESS_TOKEN and WHATSAPP_APP_SECRET are issued by Meta; enter "
        "WHATSAPP_VERIFY_TOKEN in Meta's webhook settings too",
        err=True,
    )


@cli.group(cls=_OperatorGroup)
def providers() -> None:
    """Manage provider accounts and their API tokens."""


@providers.command("create")
@click.argument("name")
@click.option(
    "--role",
    # The values: click matches an Enum choice by its member's name (ADMIN), not its value.
    type=click.Choice([role.value for role in provider_service.Role]),
    default=provider_service.Role.STAFF.value,
    show_default=True,
    help="admin or staff: the provider endpoints (admin may also start /tasks/*); "
    "scheduler: /tasks/* only (the Cloud Scheduler job).",
)
@click.pass_context
def create_provider(ctx: click.Context, name: str, role: str) -> None:
    """Create a provider and print its token once."""
    created = provider_service.create_provider(_components(ctx).repos.providers, name, role)
    click.echo(f"provider_id: {created.provider.provider_id}")
    click.echo(f"role: {created.provider.role}")
    click.echo(f"token: {created.token}")
    click.echo("Store the token now: it is shown only once.", err=True)


@providers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_context
def list_providers(ctx: click.Context, as_json: bool) -> None:
    """List provider accounts (never their tokens)."""
    for provider in provider_service.list_providers(_components(ctx).repos.providers):
        row = {
            "provider_id": provider.provider_id,
            "name": provider.name,
            "role": provider.role,
            "created_at": provider.created_at.isoformat(),
            "revoked_at": provider.revoked_at.isoformat() if provider.revoked_at else None,
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            status = "revoked" if provider.revoked else "active"
            click.echo(
                f"{row['provider_id']}  {status:7}  {provider.role:9}  {row['created_at']}  "
                f"{row['name']}"
            )


@providers.command("revoke")
@click.argument("provider_id")
@click.pass_context
def revoke_provider(ctx: click.Context, provider_id: str) -> None:
    """Revoke a provider's token at once."""
    provider_service.revoke_provider(_components(ctx).repos.providers, provider_id)
    click.echo(f"revoked: {provider_id}")


@cli.group(cls=_OperatorGroup)
def accounts() -> None:
    """Manage people's portal accounts (admin, staff) and their sign-in links."""


_PERSON_ROLES = [role.value for role in sorted(provider_service.PEOPLE)]


@accounts.command("create")
@click.argument("email")
@click.option("--name", required=True, help="The name shown in the portal and audit log.")
@click.option(
    "--role", type=click.Choice(_PERSON_ROLES), default="staff", show_default=True,
    help="admin: also manages accounts and reads the audit log; staff: everything else.",
)  # fmt: skip
@click.pass_context
def create_account(ctx: click.Context, email: str, name: str, role: str) -> None:
    """Create a person's account; then hand them a link from `accounts login-link`."""
    components = _components(ctx)
    created = people_service.create_person(
        components.repos.providers, components.repos.audit, email, name, role, "operator:cli"
    )
    click.echo(f"provider_id: {created.provider.provider_id}")
    click.echo(f"email: {created.provider.email}")
    click.echo(f"role: {created.provider.role}")
    click.echo(f"token: {created.token}")
    click.echo("Store the API token now if they need one: it is shown only once.", err=True)


@accounts.command("login-link")
@click.argument("email")
@click.option("--base-url", help="The portal's address (default: PORTAL_URL, or the local one).")
@click.pass_context
def login_link(ctx: click.Context, email: str, base_url: str | None) -> None:
    """Print a one-time sign-in link for a person (valid for one hour, once)."""
    components = _components(ctx)
    account = components.repos.providers.by_email(provider_service.normalise_email(email))
    if account is None:
        raise click.ClickException("no account has this email")
    issued = signin_service.issue_login_link(components, account.provider_id, "operator:cli")
    base = (base_url or components.config.portal_url or "http://127.0.0.1:8080").rstrip("/")
    click.echo(f"{base}/portal/sign-in#{issued.secret}")
    click.echo(
        f"for {account.name}; works once, until {issued.expires_at.isoformat()}: hand it over "
        "yourself, in person or over a channel you trust",
        err=True,
    )


@accounts.command("list")
@click.pass_context
def list_accounts(ctx: click.Context) -> None:
    """List people's accounts (those with an email)."""
    for person in provider_service.list_providers(_components(ctx).repos.providers):
        if person.email:
            status = "revoked" if person.revoked else "active"
            click.echo(
                f"{person.provider_id}  {status:7}  {person.role:5}  {person.email}  {person.name}"
            )
