"""Webhook under a slow Graph API: simulated patients complete the form against gunicorn while
Meta posts three status webhooks (sent, delivered, read) for every reply it accepted.

Run: .venv/bin/python bench/webhook.py [--patients 160] [--concurrency 16] [--graph-latency-ms 300]
     [--runs 3] [--workers 2] [--threads 8]

Each run measures, on one local stack and in this order:
- bare:    one Firestore read + conditional commit (what a message costs at the least), p50 at
           --concurrency threads on the same emulator;
- slow:    the Graph API answers each send after --graph-latency-ms, statuses on;
- instant: the Graph API answers at once, statuses on;
- quiet:   the slow Graph API without status webhooks (what statuses add to the ack p99).
Meta keeps --concurrency webhook requests in flight, each the next message of a patient whose
last reply the Graph API has taken (a person answers the question they just read); enough
patients are under way that one waiting for a slow reply never idles the load. For each
set-up it prints webhook requests/s, inbound messages/s, ack p50/p95/p99 of the patients'
messages, and reply latency p50/p95 (the patient's POST to the Graph API's answer taking the
reply); it checks every patient got every reply once and in order (the flow engine's own
replies, replayed) and every record was archived, and exits 1 otherwise. Then the target
ratios of issue 15 (median over runs):
  slow ack p50 <= 1.2 x instant ack p50        slow ack p50 <= 3 x bare p50
  slow messages/s >= 90 % of instant            reply p50 <= graph latency + 2 x ack p50
  ack p99 with statuses <= 1.25 x without
"""

from __future__ import annotations

import argparse
import heapq
import queue
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import (
    WEBHOOK_SECRET,
    bench_stack,
    fresh_components,
    inbound_message,
    quantile,
    replay,
    signed_webhook,
)
from devtools import payloads
from service.whatsapp.webhook import sign
from tests.support.fakes.graph import FakeGraphApi
from tests.support.servers import gunicorn

SCRIPT = [
    ("text", "hello"), ("button", "language:en"), ("button", "consent:yes"),
    ("text", "Bench Patient {n}"), ("text", "03/02/1980"), ("button", "gender:female"),
    ("text", "{n} Bench Street, Springfield"), ("text", "none"), ("text", "asthma inhaler"),
    ("button", "summary:confirm"),
]  # fmt: skip
STATUSES = ("sent", "delivered", "read")


@dataclass
class Figures:
    """What one set-up measured."""

    requests_per_s: float = 0.0
    messages_per_s: float = 0.0
    acks: list[float] = field(default_factory=list)  # seconds, the patients' messages
    status_acks: list[float] = field(default_factory=list)
    replies: list[float] = field(default_factory=list)  # POST to the reply's acceptance
    exact: int = 0
    archived: int = 0

    def ack(self, fraction: float) -> float:
        return quantile(self.acks, fraction) * 1000

    def reply(self, fraction: float) -> float:
        return quantile(self.replies, fraction) * 1000


class StatusPoster:
    """Meta's side after a send: `sent`, `delivered` and `read` for each accepted reply,
    signed, each a webhook request of its own, as the patient's phone reports them."""

    def __init__(self, base: str, graph: FakeGraphApi, figures: Figures, threads: int) -> None:
        self.base, self.graph, self.figures = base, graph, figures
        self.pool = ThreadPoolExecutor(threads)
        self.stopping = threading.Event()
        self.posted = 0
        self.local = threading.local()
        self.lock = threading.Lock()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        seen = 0
        while not self.stopping.is_set():
            messages = self.graph.messages
            for message in messages[seen:]:
                answered = message.get("answered_at", message["at"])
                self.pool.submit(self._report, message, answered)
            seen = len(messages)
            time.sleep(0.02)

    def _report(self, message: dict, answered: float) -> None:
        time.sleep(max(0.0, answered - time.time()))  # Meta reports after it answered
        session = getattr(self.local, "session", None) or requests.Session()
        self.local.session = session
        for status in STATUSES:
            value = payloads.status_value(message["wa_id"], message["wamid"], status)
            raw = payloads.encode(payloads.envelope([value]))
            headers = {
                "Content-Type": "application/json",
                "X-Hub-Signature-256": sign(WEBHOOK_SECRET, raw),
            }
            began = time.perf_counter()
            response = session.post(f"{self.base}/webhook", data=raw, headers=headers, timeout=30)
            took = time.perf_counter() - began
            if response.status_code != 200:
                raise RuntimeError(f"status webhook: HTTP {response.status_code}")
            with self.lock:
                self.figures.status_acks.append(took)
                self.posted += 1

    def finish(self, expected: int, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while len(self.graph.messages) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)
        self.stopping.set()
        self.watcher.join()
        self.pool.shutdown(wait=True)


def bare_commit_p50(components, seconds: float, threads: int) -> float:
    """p50 (ms) of one read + conditional commit on its own document, at `threads` at once."""
    client = components.repos.firestore
    took: list[list[float]] = [[] for _ in range(threads)]
    ready = threading.Barrier(threads)

    def worker(index: int) -> None:
        reference = client.collection("_bench").document(f"bare-{index}")
        reference.set({"n": 0})
        ready.wait()
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            began = time.perf_counter()
            snapshot = reference.get()
            unchanged = client.write_option(last_update_time=snapshot.update_time)
            reference.update({"n": snapshot.get("n") + 1}, option=unchanged)
            took[index].append(time.perf_counter() - began)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return statistics.median([value for values in took for value in values]) * 1000


class Patients:
    """Meta's side of the load: --concurrency webhook requests in flight at once, each a
    message of a patient whose last reply has arrived (a person answers what they read)."""

    def __init__(self, base: str, graph: FakeGraphApi, wa_ids: list[str], first: int) -> None:
        self.base, self.graph, self.first = base, graph, first
        self.wa_ids = wa_ids
        self.logs = {wa_id: {"acks": [], "posted_at": [], "raws": []} for wa_id in wa_ids}
        self.counts = expected_reply_counts()
        self.ready: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.waiting: dict[str, tuple[int, int]] = {}  # wa_id: (patient, replies needed)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.left = len(wa_ids)
        self.local = threading.local()
        self.clock = int(time.time())

    def run(self, concurrency: int) -> None:
        for number in range(len(self.wa_ids)):
            self.ready.put((number, 0))
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        with ThreadPoolExecutor(concurrency) as pool:
            for future in [pool.submit(self._post_loop) for _ in range(concurrency)]:
                future.result()
        self.done.set()
        watcher.join()

    def _post_loop(self) -> None:
        session = requests.Session()
        while (item := self.ready.get()) is not None:
            number, step = item
            wa_id = self.wa_ids[number]
            kind, value = SCRIPT[step]
            message = inbound_message(kind, value.format(n=self.first + number),
                                      self.clock + step)  # fmt: skip
            raw, headers = signed_webhook(wa_id, message)
            self.graph.customer_wrote(wa_id)
            log = self.logs[wa_id]
            began_at, began = time.time(), time.perf_counter()
            response = session.post(f"{self.base}/webhook", data=raw, timeout=30, headers=headers)
            log["acks"].append(time.perf_counter() - began)
            log["posted_at"].append(began_at)
            log["raws"].append(raw)
            if response.status_code != 200:
                raise RuntimeError(f"patient {number}: HTTP {response.status_code}")
            with self.lock:
                needed = sum(self.counts[: step + 1])
                self.waiting[wa_id] = (number, needed)

    def _watch(self) -> None:
        """Hand a patient their next message once the Graph API answered their reply."""
        seen, answered = 0, {wa_id: 0 for wa_id in self.wa_ids}
        pending: list[tuple[float, str]] = []
        while not self.done.is_set():
            messages = self.graph.messages
            for message in messages[seen:]:
                heapq.heappush(
                    pending, (message.get("answered_at", message["at"]), message["wa_id"])
                )
            seen = len(messages)
            now = time.time()
            while pending and pending[0][0] <= now:
                answered[heapq.heappop(pending)[1]] += 1
            with self.lock:
                for wa_id, (number, needed) in list(self.waiting.items()):
                    if answered[wa_id] < needed:
                        continue
                    del self.waiting[wa_id]
                    step = len(self.logs[wa_id]["acks"])
                    if step < len(SCRIPT):
                        self.ready.put((number, step))
                        continue
                    self.left -= 1
                    if self.left == 0:
                        for _ in range(256):
                            self.ready.put(None)
            time.sleep(0.003)


def expected_reply_counts() -> list[int]:
    """How many replies each scripted message should get, from the pure engine itself."""
    clock = int(time.time())
    raws = [
        signed_webhook("34600000001", inbound_message(kind, value.format(n=1), clock + index))[0]
        for index, (kind, value) in enumerate(SCRIPT)
    ]
    return [len(replies) for replies in replay("34600000001", raws, "0123456789abcdef").replies]


def measure(
    config, components, args, latency: float, statuses: bool, first: int, folder: Path
) -> Figures:
    """Run --patients patients (numbered from `first`) through one gunicorn server."""
    graph = FakeGraphApi("bench-token", config.whatsapp_phone_number_id,
                         throughput_per_second=1000, approved_templates=["intake_start"],
                         latency_seconds=latency)  # fmt: skip
    figures = Figures()
    wa_ids = [f"3460{first + n:07d}" for n in range(args.patients)]
    with graph:
        served = config.replace(graph_api_url=graph.base_url, meta_access_token="bench-token")
        log_path = folder / f"gunicorn-{first}.log"
        with gunicorn(served, log_path, workers=args.workers, threads=args.threads) as base:
            poster = StatusPoster(base, graph, figures, args.concurrency) if statuses else None
            patients = Patients(base, graph, wa_ids, first)
            began = time.perf_counter()
            patients.run(args.concurrency)
            elapsed = time.perf_counter() - began
            expected = args.patients * len(SCRIPT)
            if poster is not None:
                poster.finish(expected)
                requests_total = expected + poster.posted
                elapsed_all = time.perf_counter() - began
            else:
                requests_total, elapsed_all = expected, elapsed
        for wa_id in wa_ids:
            check_patient(graph, components, wa_id, patients.logs[wa_id], figures)
    figures.messages_per_s = expected / elapsed
    figures.requests_per_s = requests_total / elapsed_all
    figures.archived = sum(
        1 for wa_id in wa_ids if (components.repos.conversations.raw(wa_id) or {}).get("record_id")
    )
    return figures


def check_patient(graph: FakeGraphApi, components, wa_id: str, log: dict, figures: Figures):
    """Every reply the engine gives, once, in order; and how long each took to go."""
    stored = components.repos.conversations.raw(wa_id) or {}
    record_id = stored.get("record_id") or "0" * 32
    expected = replay(wa_id, log["raws"], record_id).replies
    got = graph.messages_to(wa_id)
    flat = [reply for replies in expected for reply in replies]
    if [message["body"] for message in got] == flat:
        figures.exact += 1
    figures.acks.extend(log["acks"])
    index = 0
    for posted_at, replies in zip(log["posted_at"], expected, strict=True):
        for _ in replies:
            if index < len(got):
                figures.replies.append(got[index].get("answered_at", got[index]["at"]) - posted_at)
            index += 1


def report(name: str, figures: Figures, patients: int) -> None:
    print(f"  {name:8} requests/s {figures.requests_per_s:6.1f}  "
          f"messages/s {figures.messages_per_s:6.1f}  "
          f"ack ms p50 {figures.ack(0.5):5.0f} p95 {figures.ack(0.95):5.0f} "
          f"p99 {figures.ack(0.99):5.0f}  "
          f"reply ms p50 {figures.reply(0.5):5.0f} p95 {figures.reply(0.95):5.0f}  "
          f"exact {figures.exact}/{patients} archived {figures.archived}/{patients}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=160)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--graph-latency-ms", type=float, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    latency = args.graph_latency_ms / 1000
    print(f"patients {args.patients} x {len(SCRIPT)} messages, concurrency {args.concurrency}, "
          f"gunicorn {args.workers} workers x {args.threads} threads, "
          f"Graph latency {args.graph_latency_ms:.0f} ms, {args.runs} runs")  # fmt: skip
    ratios: dict[str, list[float]] = {}
    absolute: dict[str, list[float]] = {}
    failed = False
    with bench_stack() as (_stack, _kms, config), tempfile.TemporaryDirectory() as folder:
        components = fresh_components(config)
        first = 0
        for run in range(1, args.runs + 1):
            bare = bare_commit_p50(components, 5.0, args.concurrency)
            print(f"run {run}: bare read + conditional commit p50 {bare:.1f} ms")
            results = {}
            for name, graph_latency, statuses in (
                ("slow", latency, True), ("instant", 0.0, True), ("quiet", latency, False)
            ):  # fmt: skip
                figures = measure(config, components, args, graph_latency, statuses, first,
                                  Path(folder))  # fmt: skip
                first += args.patients
                report(name, figures, args.patients)
                results[name] = figures
                failed |= figures.exact != args.patients or figures.archived != args.patients
            slow, instant, quiet = results["slow"], results["instant"], results["quiet"]
            for key, value in {
                "slow ack p50 / instant ack p50 (<= 1.2)": slow.ack(0.5) / instant.ack(0.5),
                "slow ack p50 / bare p50 (<= 3)": slow.ack(0.5) / bare,
                "slow messages/s / instant (>= 0.9)": slow.messages_per_s / instant.messages_per_s,
                "slow reply p50 / (graph + 2 x ack p50) (<= 1)": slow.reply(0.5)
                / (args.graph_latency_ms + 2 * slow.ack(0.5)),
                "ack p99 with statuses / without (<= 1.25)": slow.ack(0.99) / quiet.ack(0.99),
            }.items():
                ratios.setdefault(key, []).append(value)
            for key, value in {
                "slow ack p50 ms": slow.ack(0.5),
                "slow ack p99 ms": slow.ack(0.99),
                "slow reply p50 ms": slow.reply(0.5),
                "slow messages/s": slow.messages_per_s,
                "slow webhook requests/s": slow.requests_per_s,
                "bare p50 ms": bare,
            }.items():
                absolute.setdefault(key, []).append(value)
    print(f"median of {args.runs} runs:")
    for key, values in {**ratios, **absolute}.items():
        print(f"  {key:48} {statistics.median(values):8.2f}")
    if failed:
        print("some patient did not get every reply exactly once, in order, or lost a record")
        sys.exit(1)


if __name__ == "__main__":
    main()
