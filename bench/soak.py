"""Soak: patients, provider exports and injected faults together against gunicorn, then checks.

Run: make soak [SOAK_MINUTES=10], or .venv/bin/python bench/soak.py [--minutes 10] [--seed N]

For --minutes (at most 30) simulated patients fill in the intake form over the signed webhook
(English or Spanish, some answering wrongly first, asking for help, going back, editing at the
summary, typing STOP or declining consent, some writing again once done), while a provider
exports CSV and XLSX (`/extractData`, then the signed download link) and a scheduler calls
`/tasks/flush-outbox`, all against gunicorn (2 workers) on the local stack: the Firestore
emulator, fake-gcs-server (filesystem backend, so a restart keeps the bucket), the fake KMS
and the fake Graph API with Meta's limits.

Faults are injected at random times, one at a time:
- worker-sigkill: SIGKILL one gunicorn worker (a child of the master); gunicorn starts another;
- graph-500 / graph-429 / graph-slow: the fake Graph API answers the next few sends with 500
  (codes 1, 2, 131000), with 429 130429 and a Retry-After of 1-15 s, or holds its answers 1-6 s
  (under the client's 10 s read timeout: a send that times out after Meta accepted it is sent
  again, as the Cloud API has no idempotency key, so longer delays would test that, not us);
- firestore-freeze: SIGSTOP the Firestore emulator's process group for 3-12 s, then SIGCONT.
  Not a restart: the emulator keeps its data only in memory (its --export-on-exit wrote
  nothing when tried here), so a restart would wipe every conversation and record, which
  production Firestore never does. Frozen, it accepts connections and answers nothing;
- gcs-restart: stop fake-gcs-server (its process group gets SIGTERM), wait 2-8 s, start it
  again on the same port; its filesystem backend keeps every object.

Meta's redelivery is simulated: a webhook POST answered with anything but 200, or failing to
connect or to answer within 20 s, is posted again (same message id and timestamp) with
exponential backoff and jitter until it gets 200. A patient waits for the bot's replies to a
message (up to 30 s) before answering, as a person reading the phone does.

When the time is up, no new patients start; those under way finish; the faults stop; the
outbox is flushed until empty (a reply leased by a killed worker waits for its 180 s lease);
a last export is taken. Then every invariant is checked and the figures printed; any failure
exits 1:
- each patient got exactly the replies the flow engine itself gives to the messages they sent
  (replayed with the service's own parser and engine): none twice, none missing (a STOP drops
  replies still queued before it, by design: those may be missing, never doubled). A reply
  sent twice because a worker was SIGKILLed after Graph accepted it and before the outbox
  write settling it is listed apart with that kill (at-least-once: the Cloud API has no
  idempotency key); --strict-replies makes it a failure too; any other duplicate fails;
- each conversation ends in the state the engine predicts; no webhook answer was a 500;
- every completed conversation has exactly one archived record, which decrypts through the
  archive repository and holds what the patient typed; no record, index entry or object
  without its completed conversation (lost = 0, doubled = 0);
- every export opens with its day's password and holds no record twice, only records of the
  final archive, and every record confirmed before the export was requested; the last export
  holds exactly the archive.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import openpyxl
import pyzipper
import requests

from bench.common import (
    bench_stack,
    fresh_components,
    gcs_filesystem_backend,
    inbound_message,
    quantile,
    replay,
    signed_webhook,
)
from devtools.devstack import LocalStack
from repositories.archive import record_id_of_object
from service.accounts import providers as provider_service
from service.domain.passwords import export_password
from service.domain.record import new_record_id, to_dict
from service.shell.components import Components
from tests.support.fakes.graph import FakeGraphApi
from tests.support.servers import gunicorn

MAX_MINUTES = 30
WORKERS, THREADS = 2, 8
PLACEHOLDER_ID = new_record_id()  # any valid id will do to count replies
WEBHOOK_TIMEOUT = 20.0  # Meta gives up on a slow webhook and redelivers it later
GIVE_UP_SECONDS = 600.0  # Meta retries for 7 days; a bench that waits longer is broken anyway
REPLY_WAIT_SECONDS = 30.0
EXPORT_TIMEOUT = 120.0
DRAIN_LIMIT_SECONDS = 300.0  # covers the 180 s outbox lease of a reply a killed worker held
KILL_WINDOW_SECONDS = 60.0  # a round of sends stops starting new ones after 60 s, then settles
LEASE_RESEND_SECONDS = 100.0  # a copy re-sent only once the dead worker's 180 s lease ran out
FAULT_WEIGHTS = {
    "worker-sigkill": 4,
    "graph-500": 2,
    "graph-429": 2,
    "graph-slow": 2,
    "firestore-freeze": 2,
    "gcs-restart": 2,
}


# -- what the simulated people do -----------------------------------------------------------------
NAMES = {
    "en": ["Mary Johnson", "Robert O'Neil", "Linda Park-Smith", "James Carter", "Zoë Adams"],
    "es": ["José Núñez", "María Fernández López", "Íñigo Peña-Ruiz", "Lucía Gómez", "Andrés Ruiz"],
}
BIRTH_DATES = {
    "en": ["03/02/1980", "1975-11-12", "3 February 1962", "21/07/2001"],
    "es": ["03/02/1980", "12.11.1975", "3 de febrero de 1962", "21/07/2001"],
}
BAD_DATES = ["31/02/1980", "yesterday", "01/01/2999"]
ADDRESSES = {
    "en": ["{n} Elm Street, Springfield", "Flat {n}, 4 High Road, Leeds LS1 4AB"],
    "es": ["Calle Mayor {n}, 28013 Madrid", "Avenida de la Constitución {n}, Sevilla"],
}
CONDITIONS = {
    "en": ["none", "asthma", "asthma, high blood pressure", "type 2 diabetes"],
    "es": ["ninguna", "asma", "asma, hipertensión", "diabetes tipo 2"],
}
MEDICATIONS = {
    "en": ["none", "salbutamol inhaler", "metformin 500 mg; lisinopril"],
    "es": ["ninguno", "inhalador de salbutamol", "metformina 500 mg; enalapril"],
}
GENDER_WORDS = {"female": {"en": "female", "es": "mujer"}, "male": {"en": "m", "es": "hombre"}}
STOP_WORDS = {"en": "STOP", "es": "parar"}
HELP_WORDS = {"en": "help", "es": "ayuda"}
BACK_WORDS = {"en": "back", "es": "atrás"}


@dataclass
class Plan:
    kind: str  # complete, edit, stop, decline
    language: str
    script: list[tuple[str, str]]
    name: str = ""
    address: str = ""


def make_plan(rng: random.Random, number: int) -> Plan:
    """A patient's messages: a whole form, with the detours people take."""
    language = rng.choice(("en", "es"))
    kind = rng.choices(("complete", "edit", "stop", "decline"), (62, 22, 12, 4))[0]
    name = rng.choice(NAMES[language])
    address = rng.choice(ADDRESSES[language]).format(n=number % 900 + 1)
    gender = rng.choice(("female", "male", "other"))
    script: list[tuple[str, str]] = [("text", rng.choice(("hello", "hola", "Hi")))]
    if rng.random() < 0.2:
        script.append(("text", "español" if language == "es" else "English"))
    else:
        script.append(("button", f"language:{language}"))
    if kind == "decline":
        return Plan(kind, language, [*script, ("button", "consent:no")])
    script.append(("button", "consent:yes"))
    answers: list[list[tuple[str, str]]] = [
        [("text", name)],
        [("text", rng.choice(BIRTH_DATES[language]))],
        [("text", GENDER_WORDS[gender][language])]
        if gender in GENDER_WORDS and rng.random() < 0.4
        else [("button", f"gender:{gender}")],
        [("text", address)],
        [("text", rng.choice(CONDITIONS[language]))],
        [("text", rng.choice(MEDICATIONS[language]))],
    ]
    if rng.random() < 0.25:  # a date the form refuses, then a good one
        answers[1].insert(0, ("text", rng.choice(BAD_DATES)))
    if rng.random() < 0.15:  # help in the middle of a question
        at = rng.randrange(len(answers))
        answers[at].insert(0, ("text", HELP_WORDS[language]))
    if rng.random() < 0.15:  # answer, go back, answer again
        at = rng.randrange(1, len(answers))
        answers[at] = [("text", BACK_WORDS[language]), *answers[at - 1], *answers[at]]
    if kind == "stop":
        cut = rng.randrange(len(answers))
        flat = [message for group in answers[:cut] for message in group]
        return Plan(kind, language, [*script, *flat, ("text", STOP_WORDS[language])])
    script += [message for group in answers for message in group]
    if kind == "edit":
        if rng.random() < 0.5:
            address = rng.choice(ADDRESSES[language]).format(n=number % 900 + 2)
            changed = [("list", "edit_choice:address"), ("text", address)]
        else:
            name = rng.choice([other for other in NAMES[language] if other != name])
            changed = [("list", "edit_choice:name"), ("text", name)]
        script += [("button", "summary:edit"), *changed]
    script.append(("button", "summary:confirm"))
    if rng.random() < 0.1:  # writes again once done: told the reference again
        script.append(("text", rng.choice(("hello", "hola"))))
    return Plan(kind, language, script, name, address)


def check_plans(seed: int, count: int = 500) -> None:
    """Each kind of plan ends as meant, by the flow engine itself (a bench bug otherwise)."""
    meant = {"complete": "completed", "edit": "completed", "stop": "opted_out",
             "decline": "opted_out"}  # fmt: skip
    for number in range(count):
        plan = make_plan(random.Random(f"{seed}-patient-{number}"), number)
        raws = [
            signed_webhook("34610000000", inbound_message(kind, value, 1_700_000_000 + index))[0]
            for index, (kind, value) in enumerate(plan.script)
        ]
        outcome = replay("34610000000", raws, PLACEHOLDER_ID)
        if outcome.status != meant[plan.kind]:
            raise AssertionError(f"plan {number} ({plan.kind}) ends {outcome.status}: {plan}")
        if plan.kind in ("complete", "edit"):
            record = outcome.records[-1]
            assert (record["name"], record["address"]) == (plan.name, plan.address), plan


# -- shared state -------------------------------------------------------------------------------
class CountingGraph(FakeGraphApi):
    """The fake Graph API, also counting accepted messages per recipient for waiting patients."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arrived = threading.Condition()
        self._counts: Counter[str] = Counter()

    def _accept(self, body: dict[str, Any], wa_id: str, now: float) -> Any:
        reply = super()._accept(body, wa_id, now)
        with self._arrived:
            self._counts[wa_id] += 1
            self._arrived.notify_all()
        return reply

    def wait_for(self, wa_id: str, count: int, timeout: float) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: self._counts[wa_id] >= count, timeout)


@dataclass
class PatientLog:
    number: int
    wa_id: str
    plan: Plan
    raws: list[bytes] = field(default_factory=list)
    confirmed_at: float | None = None  # monotonic time the Confirm got its 200
    finished: bool = False
    gave_up: bool = False


@dataclass
class ExportLog:
    file_format: str
    began: float  # monotonic, before the request
    answer: dict[str, Any] | None = None
    zip_bytes: bytes = b""
    password_date: str = ""
    error: str = ""


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    posts: int = 0
    retries: int = 0
    webhook_answers: Counter[str] = field(default_factory=Counter)
    ack_latencies: list[float] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    fault_notes: list[str] = field(default_factory=list)
    flushes: int = 0
    flush_sent: int = 0
    flush_answers: Counter[str] = field(default_factory=Counter)
    export_retries: int = 0
    export_answers: Counter[str] = field(default_factory=Counter)
    reply_waits_timed_out: int = 0
    worker_restart_seconds: list[float] = field(default_factory=list)
    kill_times: list[float] = field(default_factory=list)  # wall clock, as the fake Graph's

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def count(self, counter: str, key: str) -> None:
        with self.lock:
            getattr(self, counter)[key] += 1


@dataclass
class Soak:
    base: str
    port: int
    graph: CountingGraph
    stack: LocalStack
    components: Components
    token: str
    seed: int
    started: float
    started_wall: float
    deadline: float
    stats: Stats = field(default_factory=Stats)
    patients: list[PatientLog] = field(default_factory=list)
    exports: list[ExportLog] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    next_number: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def new_patient(self) -> PatientLog:
        with self.lock:
            number = self.next_number
            self.next_number += 1
            plan = make_plan(random.Random(f"{self.seed}-patient-{number}"), number)
            log = PatientLog(number, f"3461{number:07d}", plan)
            self.patients.append(log)
            return log

    def provider_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _answer_name(response: requests.Response | None, error: Exception | None) -> str:
    return str(response.status_code) if response is not None else type(error).__name__


# -- patients -------------------------------------------------------------------------------------
def run_patients(soak: Soak, think: tuple[float, float]) -> None:
    """One slot of concurrency: patient after patient until the time is up."""
    rng = random.Random(f"{soak.seed}-slot-{threading.get_ident()}")
    session = requests.Session()
    while time.monotonic() < soak.deadline:
        run_patient(soak, soak.new_patient(), session, rng, think)


def run_patient(
    soak: Soak,
    log: PatientLog,
    session: requests.Session,
    rng: random.Random,
    think: tuple[float, float],
) -> None:
    clock = int(time.time())
    expected = 0
    for index, (kind, value) in enumerate(log.plan.script):
        clock = max(clock + 1, int(time.time()))  # Meta's timestamps: seconds, increasing
        raw, headers = signed_webhook(log.wa_id, inbound_message(kind, value, clock))
        log.raws.append(raw)
        if not deliver(soak, session, log.wa_id, raw, headers):
            log.gave_up = True
            return
        if value == "summary:confirm":
            log.confirmed_at = time.monotonic()
        if index == len(log.plan.script) - 1:
            break
        expected = sum(map(len, replay(log.wa_id, log.raws, PLACEHOLDER_ID).replies))
        if not soak.graph.wait_for(log.wa_id, expected, REPLY_WAIT_SECONDS):
            soak.stats.add("reply_waits_timed_out")
        time.sleep(rng.uniform(*think))
    log.finished = True


def deliver(
    soak: Soak, session: requests.Session, wa_id: str, raw: bytes, headers: dict[str, str]
) -> bool:
    """Post as Meta does: anything but 200 is delivered again, with backoff, until 200."""
    started, pause = time.monotonic(), 0.5
    while True:
        soak.graph.customer_wrote(wa_id)
        response, error = None, None
        began = time.perf_counter()
        try:
            response = session.post(
                f"{soak.base}/webhook", data=raw, headers=headers, timeout=WEBHOOK_TIMEOUT
            )
        except requests.RequestException as caught:
            error = caught
        seconds = time.perf_counter() - began
        soak.stats.add("posts")
        soak.stats.count("webhook_answers", _answer_name(response, error))
        if response is not None and response.status_code == 200:
            with soak.stats.lock:
                soak.stats.ack_latencies.append(seconds)
            return True
        if time.monotonic() - started > GIVE_UP_SECONDS:
            return False
        soak.stats.add("retries")
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, 8.0)


# -- the provider and the scheduler ---------------------------------------------------------------
def run_exports(soak: Soak, every: float) -> None:
    rng = random.Random(f"{soak.seed}-exports")
    formats = ("csv", "xlsx")
    while not soak.stopping.wait(rng.uniform(0.5 * every, 1.5 * every)):
        if time.monotonic() > soak.deadline:
            return
        soak.exports.append(take_export(soak, formats[len(soak.exports) % 2]))


def take_export(soak: Soak, file_format: str) -> ExportLog:
    """Request an export and follow its link, retrying as a person would after an error."""
    log = ExportLog(file_format, time.monotonic())
    session = requests.Session()
    answer = _retrying(
        soak,
        lambda: session.get(
            f"{soak.base}/extractData",
            params={"format": file_format},
            headers=soak.provider_headers(),
            timeout=EXPORT_TIMEOUT,
        ),
    )
    if answer is None:
        log.error = "the export request never succeeded"
        return log
    log.answer = answer.json()
    download = _retrying(
        soak, lambda: session.get(log.answer["download_url"], timeout=EXPORT_TIMEOUT)
    )
    if download is None:
        log.error = "the download never succeeded"
        return log
    log.zip_bytes = download.content
    log.password_date = download.headers.get("X-Export-Password-Date", "")
    return log


def _retrying(
    soak: Soak, call: Callable[[], requests.Response], limit: float = 300.0
) -> requests.Response | None:
    started, pause = time.monotonic(), 1.0
    while time.monotonic() - started < limit:
        response, error = None, None
        try:
            response = call()
        except requests.RequestException as caught:
            error = caught
        soak.stats.count("export_answers", _answer_name(response, error))
        if response is not None and response.status_code == 200:
            return response
        soak.stats.add("export_retries")
        time.sleep(pause)
        pause = min(pause * 2, 8.0)
    return None


def flush_outbox(soak: Soak) -> int:
    """What Cloud Scheduler does: POST /tasks/flush-outbox with a token allowed to."""
    soak.stats.add("flushes")
    response, error = None, None
    try:
        response = requests.post(
            f"{soak.base}/tasks/flush-outbox", headers=soak.provider_headers(), timeout=120
        )
    except requests.RequestException as caught:
        error = caught
    soak.stats.count("flush_answers", _answer_name(response, error))
    if response is not None and response.status_code == 200:
        sent = response.json()["sent"]
        soak.stats.add("flush_sent", sent)
        return sent
    return 0


def run_scheduler(soak: Soak, every: float) -> None:
    while not soak.stopping.wait(every):
        flush_outbox(soak)


# -- faults ---------------------------------------------------------------------------------------
def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children(parent: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _parent_of(int(entry.name)) == parent
    ]


def gunicorn_master(port: int) -> int | None:
    """Our gunicorn master: a child of this process serving on the port."""
    for pid in _children(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gunicorn" in b" ".join(argv) and f"127.0.0.1:{port}".encode() in argv:
            return pid
    return None


class FaultInjector:
    def __init__(self, soak: Soak, every: float) -> None:
        self.soak = soak
        self.every = every
        self.rng = random.Random(f"{soak.seed}-faults")
        self.master = gunicorn_master(soak.port)
        if self.master is None:
            raise RuntimeError("gunicorn's master process was not found")

    def run(self) -> None:
        kinds, weights = zip(*FAULT_WEIGHTS.items(), strict=True)
        while not self.soak.stopping.wait(self.rng.expovariate(1 / self.every)):
            if time.monotonic() > self.soak.deadline:
                return  # patients still under way finish without new faults
            kind = self.rng.choices(kinds, weights)[0]
            note = getattr(self, kind.replace("-", "_"))()
            if note:
                self.soak.stats.count("faults", kind)
                elapsed = time.monotonic() - self.soak.started
                with self.soak.stats.lock:
                    self.soak.stats.fault_notes.append(f"{elapsed:6.1f} s  {kind}: {note}")

    def worker_sigkill(self) -> str:
        workers = _children(self.master)
        if len(workers) < WORKERS:
            return ""  # one is still starting after the last kill
        victim = self.rng.choice(workers)
        os.kill(victim, signal.SIGKILL)
        with self.soak.stats.lock:
            self.soak.stats.kill_times.append(time.time())
        began = time.monotonic()
        while time.monotonic() - began < 60:
            time.sleep(0.2)
            alive = [pid for pid in _children(self.master) if pid != victim]
            if len(alive) >= WORKERS:
                self.soak.stats.worker_restart_seconds.append(time.monotonic() - began)
                break
        return f"worker {victim} killed"

    def graph_500(self) -> str:
        count, code = self.rng.randint(1, 6), self.rng.choice((1, 2, 131000))
        self.soak.graph.fail_next(count, status=500, code=code)
        return f"next {count} sends answer 500 (code {code})"

    def graph_429(self) -> str:
        count, after = self.rng.randint(1, 4), self.rng.choice((1, 2, 3, 8, 15))
        self.soak.graph.fail_next(count, status=429, code=130429, retry_after=after)
        return f"next {count} sends answer 429 130429, Retry-After {after}"

    def graph_slow(self) -> str:
        count, seconds = self.rng.randint(1, 8), round(self.rng.uniform(1.0, 6.0), 1)
        self.soak.graph.delay_next(count, seconds)
        return f"next {count} sends answered after {seconds} s"

    def firestore_freeze(self) -> str:
        process = self.soak.stack.firestore.process
        assert process is not None
        seconds = round(self.rng.uniform(3.0, 12.0), 1)
        os.killpg(process.pid, signal.SIGSTOP)
        try:
            self.soak.stopping.wait(seconds)
        finally:
            os.killpg(process.pid, signal.SIGCONT)
        return f"emulator stopped (SIGSTOP) for {seconds} s"

    def gcs_restart(self) -> str:
        seconds = round(self.rng.uniform(2.0, 8.0), 1)
        self.soak.stack.gcs.stop()
        try:
            self.soak.stopping.wait(seconds)
        finally:
            self.soak.stack.gcs.start()
        return f"down for {seconds} s, then restarted"


# -- the checks -----------------------------------------------------------------------------------
def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@dataclass
class Findings:
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)  # record ids, or patients short of a record
    doubled: set[str] = field(default_factory=set)  # record ids stored twice, or such patients
    orphans: set[str] = field(default_factory=set)  # records without a completed conversation
    kill_window_duplicates: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures.append(message)


def check_patients(soak: Soak, findings: Findings) -> dict[str, str]:
    """Replies, conversation state and archived records per patient; return completed ids."""
    conversations, archive = soak.components.repos.conversations, soak.components.repos.archive
    completed: dict[str, str] = {}  # record id -> wa_id
    doubled_replies = lost_replies = dropped_by_stop = out_of_order = 0
    lost, doubled = findings.lost, findings.doubled
    statuses: Counter[str] = Counter()
    for log in soak.patients:
        if not log.raws:
            continue
        if log.gave_up:
            findings.fail(f"patient {log.number}: a message never got 200 in {GIVE_UP_SECONDS} s")
        stored = conversations.raw(log.wa_id) or {}
        record_ids = list(stored.get("record_ids") or [])
        oracle = replay(log.wa_id, log.raws, record_ids[-1] if record_ids else PLACEHOLDER_ID)
        status = stored.get("status")
        statuses[str(status)] += 1
        if status != oracle.status:
            findings.fail(
                f"patient {log.number}: state {status!r}, the flow says {oracle.status!r}"
            )
        expected_order = [_canonical(b) for replies in oracle.replies for b in replies]
        sent = soak.graph.messages_to(log.wa_id)
        actual_order = [_canonical(m["body"]) for m in sent]
        extra = Counter(actual_order) - Counter(expected_order)
        missing = Counter(expected_order) - Counter(actual_order)
        for body, count in extra.items():
            copies = [m["at"] for m in sent if _canonical(m["body"]) == body]
            wanted = len(copies) - count
            for at in copies[wanted:]:
                line = _explain_copy(soak, log, copies[0], at, json.loads(body)["type"])
                if line.startswith("explained"):
                    findings.kill_window_duplicates.append(line)
                else:
                    doubled_replies += 1
                    findings.fail(line)
        if missing and oracle.status == "opted_out":
            # STOP drops replies still queued before it; the STOP's own answer must arrive.
            droppable = Counter(_canonical(b) for replies in oracle.replies[:-1] for b in replies)
            if not missing - droppable:
                dropped_by_stop += sum(missing.values())
                missing = Counter()
        if missing:
            lost_replies += sum(missing.values())
            findings.fail(f"patient {log.number}: {sum(missing.values())} reply(ies) never arrived")
        if not extra and not missing and actual_order != expected_order:
            out_of_order += 1
        # Records: the flow archives at most one per patient here.
        if len(oracle.records) != len(record_ids):
            if len(record_ids) > len(oracle.records):
                doubled.add(f"patient {log.number}")
            else:
                lost.add(f"patient {log.number}")
            findings.fail(
                f"patient {log.number}: {len(record_ids)} record id(s) on the conversation, "
                f"the flow archived {len(oracle.records)}"
            )
            continue
        for record_id, wanted in zip(record_ids, oracle.records, strict=True):
            completed[record_id] = log.wa_id
            try:
                record = archive.read(record_id)
            except Exception as error:  # noqa: BLE001 - every failure is reported, none hidden
                lost.add(record_id)
                findings.fail(f"patient {log.number}: record {record_id} unreadable: {error!r}")
                continue
            got = to_dict(record)
            differs = [key for key, value in _plain(wanted).items() if got.get(key) != value]
            if record.wa_id != log.wa_id:
                differs.append("wa_id")
            if record.name != log.plan.name or record.address != log.plan.address:
                differs.append("typed name/address")
            if differs:
                findings.fail(f"patient {log.number}: record {record_id} differs in {differs}")
    findings.figures.update(
        statuses=dict(statuses),
        doubled_replies=doubled_replies,
        lost_replies=lost_replies,
        dropped_by_stop=dropped_by_stop,
        out_of_order=out_of_order,
    )
    return completed


def _explain_copy(soak: Soak, log: PatientLog, first: float, again: float, kind: str) -> str:
    """Say why a reply went out twice, when a worker's death explains it.

    A worker sends a round of leased replies, then settles them in one write. Killed in
    between, its sent replies stay leased; when the 180 s lease runs out the next flush or
    redelivery sends them again. The Cloud API has no idempotency key, so no design can make
    this window empty; it is reported apart, with the kill that opened it.
    """
    start = soak.started_wall
    kills = [at for at in soak.stats.kill_times if first <= at <= first + KILL_WINDOW_SECONDS]
    where = (
        f"patient {log.number}: a reply ({kind}) sent at {first - start:.1f} s "
        f"went out again at {again - start:.1f} s"
    )
    if kills and again - first >= LEASE_RESEND_SECONDS:
        return f"explained: {where}, after a worker was killed at {kills[0] - start:.1f} s"
    return where + " (no worker kill explains it)"


def check_archive(soak: Soak, completed: dict[str, str], findings: Findings) -> set[str]:
    """Index entries and objects are exactly the completed conversations' records."""
    archive = soak.components.repos.archive
    entries = list(archive.index_entries())
    index_ids = Counter(entry.record_id for entry in entries)
    names = [name for name in archive.object_names() if name.endswith(".tink")]
    object_ids = Counter(record_id_of_object(name) for name in names)
    wanted = set(completed)
    for label, ids in (("index entries", index_ids), ("objects", object_ids)):
        twice = [record_id for record_id, count in ids.items() if count > 1]
        orphans = set(ids) - wanted
        missing = wanted - set(ids)
        if twice:
            findings.fail(f"{len(twice)} record(s) with several {label}")
        if orphans:
            findings.fail(f"{len(orphans)} {label} without a completed conversation: {orphans}")
        if missing:
            findings.fail(f"{len(missing)} completed conversation(s) without {label}: {missing}")
        findings.doubled.update(twice)
        findings.orphans.update(orphans)
        findings.lost.update(missing)
    findings.figures.update(index_entries=len(entries), objects=len(names))
    return {entry.record_id for entry in entries if entry.status == "active"}


def read_export(log: ExportLog, zip_password: str) -> list[str]:
    """The record ids in an export, opened with its day's password."""
    password = export_password(zip_password, date.fromisoformat(log.password_date)).password
    with pyzipper.AESZipFile(io.BytesIO(log.zip_bytes)) as zipped:
        zipped.setpassword(password.encode())
        names = zipped.namelist()
        if names != [f"intakes.{log.file_format}"]:
            raise ValueError(f"the zip holds {names}")
        data = zipped.read(names[0])
    if log.file_format == "csv":
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
        if rows[0][0] != "record_id":
            raise ValueError(f"unexpected header {rows[0]}")
        return [row[0] for row in rows[1:]]
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    ids = []
    for sheet in book.worksheets:
        rows = sheet.iter_rows(values_only=True)
        header = next(rows)
        if header[0] != "record_id":
            raise ValueError(f"unexpected header {header} on sheet {sheet.title}")
        ids += [str(row[0]) for row in rows]
    return ids


def check_exports(
    soak: Soak, confirmed_at: dict[str, float], archived: set[str], findings: Findings
) -> None:
    zip_password = soak.components.config.zip_password
    for number, log in enumerate(soak.exports, 1):
        label = f"export {number} ({log.file_format})"
        if log.error or log.answer is None:
            findings.fail(f"{label}: {log.error}")
            continue
        try:
            ids = read_export(log, zip_password)
        except Exception as error:  # noqa: BLE001 - reported as a failure
            findings.fail(f"{label}: does not open with its day's password: {error!r}")
            continue
        required = {rid for rid, at in confirmed_at.items() if at < log.began}
        if len(ids) != len(set(ids)):
            findings.fail(f"{label}: a record appears twice")
        if len(ids) != log.answer["records"]:
            findings.fail(f"{label}: {len(ids)} rows, the answer said {log.answer['records']}")
        if set(ids) - archived:
            findings.fail(f"{label}: records not in the archive: {set(ids) - archived}")
        if required - set(ids):
            findings.fail(f"{label}: misses records confirmed before it: {required - set(ids)}")
        if log is soak.exports[-1] and set(ids) != archived:
            findings.fail(f"{label} (after the drain): differs from the archive")
    findings.figures["exports"] = Counter(log.file_format for log in soak.exports)


def confirmation_times(soak: Soak, completed: dict[str, str]) -> dict[str, float]:
    """When each record's patient had their Confirm acknowledged (monotonic)."""
    by_wa_id = {log.wa_id: log for log in soak.patients}
    times = {}
    for record_id, wa_id in completed.items():
        confirmed_at = by_wa_id[wa_id].confirmed_at
        if confirmed_at is not None:
            times[record_id] = confirmed_at
    return times


# -- the run --------------------------------------------------------------------------------------
def soak_run(args: argparse.Namespace) -> int:
    seconds = args.minutes * 60
    graph = CountingGraph("soak-token", "100000000000001", approved_templates=["intake_start"])
    with tempfile.TemporaryDirectory(prefix="soak-") as folder:
        gcs_root = Path(folder) / "gcs"
        gcs_root.mkdir()
        with (
            gcs_filesystem_backend(gcs_root),
            bench_stack() as (stack, _kms, config),
            graph,
        ):
            config = config.replace(graph_api_url=graph.base_url, meta_access_token="soak-token")
            components = fresh_components(config)
            # An admin account: it exports like staff and flushes like the scheduler's account.
            token = provider_service.create_provider(
                components.repos.providers, "Soak", provider_service.Role.ADMIN
            ).token
            log_path = Path(folder) / "gunicorn.log"
            with gunicorn(config, log_path, workers=WORKERS, threads=THREADS) as base:
                port = int(base.rsplit(":", 1)[1])
                now = time.monotonic()
                soak = Soak(base, port, graph, stack, components, token, args.seed,
                            now, time.time(), now + seconds)  # fmt: skip
                code = drive(soak, args)
                _print_log_summary(log_path)
                if args.keep_log:
                    Path(args.keep_log).write_bytes(log_path.read_bytes())
            return code


def _guarded(soak: Soak, target: Callable[..., None], *args: Any) -> threading.Thread:
    """A background thread whose crash becomes a failure of the soak, not a silent stop."""

    def run() -> None:
        try:
            target(*args)
        except Exception:  # noqa: BLE001 - recorded and reported as a failure
            with soak.lock:
                soak.errors.append(f"{target.__name__}: {traceback.format_exc()}")

    return threading.Thread(target=run, daemon=True)


def drive(soak: Soak, args: argparse.Namespace) -> int:
    print(
        f"soak: {args.minutes:g} min, {args.concurrency} patients at a time, gunicorn "
        f"{WORKERS} workers x {THREADS} threads, a fault every ~{args.fault_every:g} s, "
        f"an export every ~{args.export_every:g} s, outbox flush every {args.flush_every:g} s, "
        f"seed {args.seed}",
        flush=True,
    )
    injector = FaultInjector(soak, args.fault_every)
    began = time.monotonic()
    background = [
        _guarded(soak, run_exports, soak, args.export_every),
        _guarded(soak, run_scheduler, soak, args.flush_every),
        _guarded(soak, injector.run),
    ]
    for thread in background:
        thread.start()
    with ThreadPoolExecutor(args.concurrency) as pool:
        slots = [
            pool.submit(run_patients, soak, (args.think_min, args.think_max))
            for _ in range(args.concurrency)
        ]
        for slot in slots:
            slot.result()
    traffic_seconds = time.monotonic() - began
    soak.stopping.set()
    for thread in background:
        thread.join()
    drain_began = time.monotonic()
    drained = drain(soak)
    drain_seconds = time.monotonic() - drain_began
    soak.exports.append(take_export(soak, "csv"))  # the archive at rest
    findings = Findings()
    for error in soak.errors:
        findings.fail(f"a background thread crashed: {error}")
    if not drained:
        findings.fail(f"the outbox still held replies after {DRAIN_LIMIT_SECONDS:.0f} s")
    completed = check_patients(soak, findings)
    archived = check_archive(soak, completed, findings)
    check_exports(soak, confirmation_times(soak, completed), archived, findings)
    if args.strict_replies:
        findings.failures += findings.kill_window_duplicates
    webhook_500 = soak.stats.webhook_answers.get("500", 0)
    if webhook_500:
        findings.fail(f"the webhook answered 500 {webhook_500} time(s)")
    if soak.stats.export_answers.get("500", 0):
        findings.fail(f"exports answered 500 {soak.stats.export_answers['500']} time(s)")
    report(soak, findings, traffic_seconds, drain_seconds, time.monotonic() - began)
    return 1 if findings.failures else 0


def drain(soak: Soak) -> bool:
    """Flush the outbox until nothing is queued (a killed worker's lease must run out first)."""
    deadline = time.monotonic() + DRAIN_LIMIT_SECONDS
    conversations = soak.components.repos.conversations
    while time.monotonic() < deadline:
        flush_outbox(soak)
        if not conversations.with_pending_outbox():
            return True
        time.sleep(5)
    return False


def report(
    soak: Soak, findings: Findings, traffic: float, drain_seconds: float, total: float
) -> None:
    stats, figures = soak.stats, findings.figures
    messages = sum(len(log.raws) for log in soak.patients)
    latencies = stats.ack_latencies
    faults = ", ".join(f"{kind} {stats.faults[kind]}" for kind in FAULT_WEIGHTS)
    plans = Counter(log.plan.kind for log in soak.patients)
    languages = Counter(log.plan.language for log in soak.patients)
    statuses = figures["statuses"]
    planned = soak.deadline - soak.started
    in_window = len(findings.kill_window_duplicates)
    other = sum(v for k, v in statuses.items() if k not in ("completed", "opted_out"))
    print("\n== fault log")
    for note in stats.fault_notes:
        print(f"  {note}")
    print("\n== figures")
    lines = [
        ("duration", f"{total:.0f} s ({traffic:.0f} s of traffic, faults until {planned:.0f} s; "
                     f"{drain_seconds:.0f} s draining the outbox, then the checks)"),
        ("patients", f"{len(soak.patients)} ({dict(plans)}; {dict(languages)})"),
        ("messages sent", f"{messages} ({messages / traffic:.1f}/s); webhook POSTs "
                          f"{stats.posts}, answers {dict(stats.webhook_answers)}"),
        ("webhook retries", f"{stats.retries} (Meta's redelivery after a non-200 or no answer)"),
        ("webhook latency", f"p50 {quantile(latencies, 0.5) * 1000:.0f} ms, "
                            f"p95 {quantile(latencies, 0.95) * 1000:.0f} ms, "
                            f"p99 {quantile(latencies, 0.99) * 1000:.0f} ms (200 answers)"),
        ("faults injected", f"{sum(stats.faults.values())}: {faults}"),
        ("worker restarts", "gunicorn forked a new worker after each kill in "
                            + (", ".join(f"{s:.1f}" for s in stats.worker_restart_seconds)
                               or "(no kill)") + " s"),
        ("replies sent by Graph", f"{len(soak.graph.messages)} accepted, "
                                  f"{len(soak.graph.requests)} requests"),
        ("outbox flushes", f"{stats.flushes} calls, {stats.flush_sent} replies sent by them, "
                           f"answers {dict(stats.flush_answers)}"),
        ("reply waits over 30 s", str(stats.reply_waits_timed_out)),
        ("conversations", f"completed {statuses.get('completed', 0)}, "
                          f"opted out {statuses.get('opted_out', 0)}, other "
                          f"{other}"),
        ("records", f"{figures['objects']} objects, {figures['index_entries']} index entries"),
        ("exports", f"{sum(figures['exports'].values())} ({dict(figures['exports'])}), "
                    f"{stats.export_retries} retried, answers {dict(stats.export_answers)}"),
        ("replies", f"doubled {figures['doubled_replies']} (+ {in_window} in a killed worker's"
                    f" send-settle window), lost {figures['lost_replies']}, "
                    f"dropped by STOP (by design) {figures['dropped_by_stop']}, patients "
                    f"served out of order {figures['out_of_order']}"),
        ("lost", str(len(findings.lost))),
        ("doubled", str(len(findings.doubled))),
        ("orphans", str(len(findings.orphans))),
    ]  # fmt: skip
    for name, value in lines:
        print(f"  {name + ':':<24}{value}")
    if findings.kill_window_duplicates:
        print(
            f"\n== {len(findings.kill_window_duplicates)} reply(ies) sent twice because a worker "
            "was SIGKILLed after Graph accepted them and before the outbox write that settles "
            "them (at-least-once; --strict-replies counts them as failures)"
        )
        for line in findings.kill_window_duplicates:
            print(f"  - {line}")
    if findings.failures:
        print(f"\n== {len(findings.failures)} invariant(s) FAILED")
        for failure in findings.failures[:50]:
            print(f"  - {failure}")
    else:
        print("\n== every invariant holds")


def _print_log_summary(log_path: Path) -> None:
    """Count the service's error lines, so a soak's log problems are visible in its output."""
    severities: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    tracebacks = 0
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("Traceback"):
            tracebacks += 1
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        severity = entry.get("severity", "?")
        severities[severity] += 1
        if severity in ("ERROR", "CRITICAL"):
            errors[entry.get("message", "")[:100]] += 1
    print(f"\n== service log: {dict(severities)}, tracebacks outside JSON lines: {tracebacks}")
    for message, count in errors.most_common(8):
        print(f"  {count:5d} x {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="at most 30")
    parser.add_argument("--concurrency", type=int, default=16, help="patients at a time")
    parser.add_argument("--fault-every", type=float, default=12.0, help="mean seconds")
    parser.add_argument("--export-every", type=float, default=20.0, help="mean seconds")
    parser.add_argument("--flush-every", type=float, default=20.0, help="seconds")
    parser.add_argument("--think-min", type=float, default=0.05, help="seconds between messages")
    parser.add_argument("--think-max", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-log", help="copy gunicorn's log here")
    parser.add_argument(
        "--strict-replies",
        action="store_true",
        help="fail on replies sent twice because a worker was killed between send and settle",
    )
    args = parser.parse_args()
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be more than 0 and at most {MAX_MINUTES}")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1_000_000)
    check_plans(args.seed)
    try:
        sys.exit(soak_run(args))
    except Exception:
        traceback.print_exc()
        sys.exit(2)


if __name__ == "__main__":
    main()
