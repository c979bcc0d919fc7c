"""Reminders at scale: thousands of patients stalled at random steps, the task run twice at once.

Each run writes `--patients` conversations straight through the repository (a stalled form at a
random step, as a patient's last message would have left it: the same schedule fields), of
which `--not-due` per cent wrote too recently to be due, then runs the reminder task twice at
once (two instances, as a late Cloud Scheduler attempt overlapping the next would), waits for
the senders to send, and checks that every due patient got exactly one reminder (the current
question again) and the others none. It prints the task's time per 1,000 due conversations
(the slower of the two runs, from the first query to the last commit) and until every reminder
was taken by the Graph API.

    .venv/bin/python bench/reminders.py --patients 3000 --runs 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from bench.common import PROJECT_ID, bench_stack, fresh_components
from service.conversation.flow.catalog import say
from service.conversation.reminders import send_reminders
from service.conversation.sender import ReplySender
from service.domain.identity import PatientIdentity
from tests.support.fakes.graph import FakeGraphApi
from tests.support.reminders import STEPS, daytime_phone, stall
from tests.support.whatsapp import body_text

PROMPTS = {"language": "ask_language", "consent": "ask_consent", "name": "ask_name",
           "date_of_birth": "ask_date_of_birth", "gender": "ask_gender",
           "address": "ask_address", "medical_conditions": "ask_medical_conditions",
           "current_medications": "ask_current_medications"}  # fmt: skip


def write_patients(components, config, graph, count: int, not_due: float, seed: int) -> dict:
    """Write `count` stalled conversations; return {phone: step or None when not due}."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    plan: dict[str, str | None] = {}
    jobs = []
    for index in range(count):
        phone = daytime_phone(index, now)
        step = rng.choice(STEPS)
        due = rng.random() >= not_due
        silent = timedelta(hours=5 if due else 1)
        graph.customer_wrote(phone, at=time.time() - silent.total_seconds())
        plan[phone] = step if due else None
        jobs.append((PatientIdentity(phone=phone), step, now - silent))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda job: stall(components.repos.conversations, *job, config), jobs))
    return plan


def run_once(config, stack, graph, args, seed: int) -> dict[str, float]:
    stack.clear_firestore(PROJECT_ID)
    graph.reset()
    components = fresh_components(config)
    components.sender = ReplySender(components, 32, 5.0)
    began = time.perf_counter()
    plan = write_patients(components, config, graph, args.patients, args.not_due / 100, seed)
    written = time.perf_counter() - began
    due = sum(1 for step in plan.values() if step is not None)
    reports, timings = [], []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        started = time.perf_counter()
        reports.append(send_reminders(components, datetime.now(UTC)))
        timings.append(time.perf_counter() - started)

    started = time.perf_counter()
    runs = [threading.Thread(target=run) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    assert components.sender.wait_idle(300), "the sender did not finish in 300 s"
    all_sent = time.perf_counter() - started
    again = send_reminders(components, datetime.now(UTC))
    problems = check(graph, plan)
    queued = sum(report.queued for report in reports)
    print(
        f"  wrote {args.patients} conversations in {written:.1f} s; {due} due; "
        f"two runs queued {queued} ({[r.queued for r in reports]}), a third {again.queued}; "
        f"task {max(timings):.2f} s, all sent {all_sent:.2f} s; problems: {len(problems)}"
    )
    for problem in problems[:10]:
        print("   ", problem)
    if problems or queued != due or again.queued:
        raise SystemExit("FAILED: a due reminder was not sent exactly once")
    return {
        "task_per_1000": max(timings) / due * 1000,
        "sent_per_1000": all_sent / due * 1000,
        "due": due,
    }


def check(graph: FakeGraphApi, plan: dict[str, str | None]) -> list[str]:
    """Every due patient got one reminder asking their question again; the others none."""
    got: dict[str, list[dict]] = {}
    for message in graph.messages:
        got.setdefault(message["wa_id"], []).append(message["body"])
    problems = []
    for index, (phone, step) in enumerate(plan.items()):
        bodies = got.get(phone, [])
        if step is None:
            if bodies:
                problems.append(f"patient {index}: {len(bodies)} reminders, none due")
            continue
        expected = say("en", "reminder_nudge", PROMPTS[step])
        if [body_text(body) for body in bodies] != [expected]:
            problems.append(f"patient {index} at {step}: {len(bodies)} messages, not the nudge")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--not-due", type=float, default=10.0, help="per cent not due yet")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    graph = FakeGraphApi("bench-token", "100000000000001", throughput_per_second=100_000,
                         approved_templates=["intake_start", "intake_reminder"])  # fmt: skip
    figures = []
    with graph, bench_stack() as (stack, _kms, config):
        config = config.replace(graph_api_url=graph.base_url, meta_access_token="bench-token")
        for number in range(args.runs):
            print(f"run {number + 1} of {args.runs}")
            figures.append(run_once(config, stack, graph, args, seed=number))
    task = statistics.median(figure["task_per_1000"] for figure in figures)
    sent = statistics.median(figure["sent_per_1000"] for figure in figures)
    print(
        f"median of {len(figures)} runs: the task takes {task:.2f} s per 1,000 due "
        f"conversations; every reminder sent {sent:.2f} s per 1,000 after the task started"
    )


if __name__ == "__main__":
    sys.exit(main())
