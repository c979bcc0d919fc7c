import importlib
import json
import sys
import textwrap

import pytest
from click.testing import CliRunner

from migrations.runner import MigrationError, discover, run_migrations
from service.shell.cli import cli
from tests.support.conversations import complete_form
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, body_text


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


# -- 0003: phone-keyed conversations move to pseudonymous keys ------------------------------


def _written_before_0003(components, phone: str) -> None:
    """Rewrite a patient's conversation as the service wrote it before 0003: named by the phone
    number, no sealed identity, the draft and every queued reply sealed for that path, and the
    replies addressed with `to`."""
    from service.keys.crypto import key_id_of

    conversations = components.repos.conversations
    key = conversations.find(phone)
    collection = components.repos.firestore.collection("conversations")
    data = collection.document(key).get().to_dict()
    keyring = components.keys.keyring()

    def reseal(sealed: bytes, old: str, new: str, address: bool = False) -> bytes:
        plain = components.keys.keyring_for(key_id_of(sealed)).decrypt(sealed, old.encode())
        if address:
            plain = json.dumps({**json.loads(plain), "to": phone}).encode()
        return keyring.encrypt(plain, new.encode())

    data.pop("identity")
    if "draft" in data:
        data["draft"] = reseal(data["draft"], f"conversations/{key}", f"conversations/{phone}")
    data["outbox"] = [
        {**item, "sealed": reseal(item["sealed"], f"conversations/{key}#outbox:{item['key']}",
                                  f"conversations/{phone}#outbox:{item['key']}", address=True)}
        for item in data.get("outbox", [])
    ]  # fmt: skip
    collection.document(phone).set(data)
    collection.document(key).delete()
    for link in components.repos.firestore.collection("identity_links").stream():
        link.reference.delete()


def _conversation_ids(components) -> list[str]:
    return [s.id for s in components.repos.firestore.collection("conversations").stream()]


def _apply_0003(components) -> None:
    (migration,) = [m for m in discover() if m.migration_id.startswith("0003_")]
    migration.apply(components)


def test_0003_moves_old_conversations_keeping_draft_queued_replies_and_records(
    client, fake_graph, components
):
    from datetime import UTC, datetime, timedelta

    done = Patient(client, fake_graph, APP_SECRET, wa_id="447700900123")
    complete_form(done)
    midway = Patient(client, fake_graph, APP_SECRET, wa_id="34612345678")
    midway.starts_form()
    fake_graph.fail_next(3, status=500, code=2)
    assert midway.says("Maria Fernanda Lopez") == []  # the next question stays queued
    for patient in (done, midway):
        _written_before_0003(components, patient.wa_id)
    raw = components.repos.firestore.collection("conversations").document("34612345678")
    outbox = [{**item, "claimed_until": datetime.now(UTC) - timedelta(minutes=5)}
              for item in raw.get().to_dict()["outbox"]]  # fmt: skip
    raw.update({"outbox": outbox})  # as if the sending process had died
    before = {phone: components.repos.firestore.collection("conversations").document(phone)
              .get().to_dict() for phone in ("447700900123", "34612345678")}  # fmt: skip

    _apply_0003(components)
    _apply_0003(components)  # idempotent: nothing left to move, nothing changed

    ids = _conversation_ids(components)
    assert len(ids) == 2 and not any(id_.isdigit() for id_ in ids)
    moved = components.repos.conversations.raw("447700900123")
    assert moved["record_ids"] == before["447700900123"]["record_ids"]
    assert moved["updated_at"] == before["447700900123"]["updated_at"]
    assert moved["status"] == "completed"
    replies = midway.says("03/02/1980")
    texts = [body_text(reply) for reply in replies]
    assert "birth" in texts[0].lower()  # the reply queued before the move goes first
    assert "gender" in texts[-1].lower()  # and the draft held the name: the form went on
    assert all(reply["to"] == "34612345678" for reply in replies)


def test_0003_is_safe_while_the_webhook_is_live(client, fake_graph, components):
    import threading

    patients = [Patient(client, fake_graph, APP_SECRET, wa_id=f"3461200000{n}")
                for n in range(6)]  # fmt: skip
    for patient in patients:
        patient.starts_form()
        _written_before_0003(components, patient.wa_id)
    answers: dict[str, list[dict]] = {}

    def write(patient) -> None:
        answers[patient.wa_id] = patient.says("Maria Fernanda Lopez")

    threads = [threading.Thread(target=write, args=(p,)) for p in patients[:3]]
    threads.append(threading.Thread(target=_apply_0003, args=(components,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _apply_0003(components)
    for patient in patients[3:]:
        answers[patient.wa_id] = patient.says("Maria Fernanda Lopez")
    ids = _conversation_ids(components)
    assert len(ids) == 6 and not any(id_.isdigit() for id_ in ids)
    for patient in patients:  # every draft survived: each form asks the next question
        assert "birth" in body_text(answers[patient.wa_id][-1]).lower(), patient.wa_id
