import importlib
import sys
import textwrap

import pytest
from click.testing import CliRunner

from migrations.runner import MigrationError, discover, run_migrations
from service.cli import cli


@pytest.fixture
def migration_package(tmp_path, request):
    """Write a throwaway migrations package; each migration appends its id to _meta/trail."""
    name = f"trial_migrations_{request.node.name}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")

    def write(filename: str, body: str = "") -> None:
        (package / filename).write_text(
            textwrap.dedent(f'''
            """Migration {filename}."""
            from google.cloud import firestore

            def apply(components):
                {body or "pass"}
                components.repos.firestore.collection("_meta").document("trail").set(
                    {{"ids": firestore.ArrayUnion(["{filename[:-3]}"])}}, merge=True
                )
        ''')
        )

    def load():
        # Forget earlier imports so a migration rewritten by the test is read afresh.
        for module in [m for m in sys.modules if m.startswith(name)]:
            del sys.modules[module]
        importlib.invalidate_caches()
        return discover(importlib.import_module(name))

    sys.path.insert(0, str(tmp_path))
    yield write, load
    sys.path.remove(str(tmp_path))
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def _trail(components) -> list[str]:
    snapshot = components.repos.firestore.collection("_meta").document("trail").get()
    return (snapshot.to_dict() or {}).get("ids", [])


def test_migrations_apply_in_number_order_and_are_recorded(components, migration_package):
    write, load = migration_package
    for filename in ("0002_second.py", "0001_first.py", "0010_tenth.py", "notes.py"):
        write(filename)
    report = run_migrations(components, available=load())
    assert report.applied == ["0001_first", "0002_second", "0010_tenth"]
    assert _trail(components) == ["0001_first", "0002_second", "0010_tenth"]
    assert components.repos.migrations.applied() == {"0001_first", "0002_second", "0010_tenth"}


def test_a_second_run_applies_nothing(components, migration_package):
    write, load = migration_package
    write("0001_first.py")
    run_migrations(components, available=load())
    assert run_migrations(components, available=load()).applied == []
    assert _trail(components) == ["0001_first"]


def test_a_failing_migration_stops_the_run_and_is_not_recorded(components, migration_package):
    write, load = migration_package
    write("0001_first.py")
    write("0002_broken.py", 'raise RuntimeError("disk on fire")')
    write("0003_later.py")
    with pytest.raises(MigrationError, match="0002_broken failed: RuntimeError: disk on fire"):
        run_migrations(components, available=load())
    assert components.repos.migrations.applied() == {"0001_first"}
    assert _trail(components) == ["0001_first"]
    # The lock is released, so the run can be retried once the migration is fixed.
    write("0002_broken.py")
    assert run_migrations(components, available=load()).applied == [
        "0002_broken",
        "0003_later",
    ]


def test_a_dry_run_lists_pending_migrations_and_changes_nothing(components, migration_package):
    write, load = migration_package
    write("0001_first.py")
    report = run_migrations(components, dry_run=True, available=load())
    assert report.pending == ["0001_first"]
    assert components.repos.migrations.applied() == set()
    assert _trail(components) == []


def test_two_migrations_with_the_same_number_are_refused(migration_package):
    write, load = migration_package
    write("0001_first.py")
    write("0001_other.py")
    with pytest.raises(MigrationError, match="two migrations are numbered 0001"):
        load()


def test_a_concurrent_run_is_refused_while_another_holds_the_lock(components, migration_package):
    from datetime import UTC, datetime

    from service.errors import ConflictError

    write, load = migration_package
    write("0001_first.py")
    components.repos.migrations.acquire_lock("other-host", datetime.now(UTC))
    with pytest.raises(ConflictError, match="another migration run holds the lock"):
        run_migrations(components, available=load())
    assert _trail(components) == []


def test_cli_migrate_ships_the_schema_version_document(components):
    runner = CliRunner()
    dry = runner.invoke(cli, ["migrate", "--dry-run"], obj=components)
    assert dry.exit_code == 0, dry.output
    assert "0001_schema_version" in dry.output
    assert components.repos.migrations.schema_version() is None

    applied = runner.invoke(cli, ["migrate"], obj=components)
    assert applied.exit_code == 0, applied.output
    assert "0001_schema_version" in applied.output
    assert components.repos.migrations.schema_version() == 1

    again = runner.invoke(cli, ["migrate"], obj=components)
    assert again.output.strip() == "applied: none"
