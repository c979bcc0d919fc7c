"""Webhook throughput: simulated patients complete the form against gunicorn.

Run: make bench, or .venv/bin/python bench/webhook.py [--patients 60] [--concurrency 24]
Prints inbound messages/s, acknowledgement latency p50/p95/p99, checks that every patient got
every reply exactly once and every record was archived, and, from the same run, the raw rate of
empty Firestore transactions on the same emulator (the stack's own limit).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.common import (
    bench_stack,
    fresh_components,
    inbound_message,
    replay,
    signed_webhook,
)
from tests.support.fakes.graph import FakeGraphApi
from tests.support.servers import gunicorn

SCRIPT = [
    ("text", "hello"), ("button", "language:en"), ("button", "consent:yes"),
    ("text", "Bench Patient {n}"), ("text", "03/02/1980"), ("button", "gender:female"),
    ("text", "{n} Bench Street, Springfield"), ("text", "none"), ("text", "asthma inhaler"),
    ("button", "summary:confirm"),
]  # fmt: skip


def expected_reply_counts() -> list[int]:
    """How many replies each scripted message should get, from the pure engine itself."""
    clock = int(time.time())
    raws = [
        signed_webhook("34600000001", inbound_message(kind, value.format(n=1), clock + index))[0]
        for index, (kind, value) in enumerate(SCRIPT)
    ]
    return [len(replies) for replies in replay("34600000001", raws, "0123456789abcdef").replies]


def empty_transaction_rate(components, seconds: float = 5.0, threads: int = 16) -> float:
    """Empty read-then-write transactions per second against the same emulator."""
    from google.cloud import firestore

    client = components.repos.firestore
    stop = time.monotonic() + seconds
    done = [0] * threads

    def worker(index: int) -> None:
        reference = client.collection("_bench").document(f"empty-{index}")
        while time.monotonic() < stop:

            @firestore.transactional
            def run(transaction):
                reference.get(transaction=transaction)
                transaction.set(reference, {"n": done[index]})

            run(client.transaction())
            done[index] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(done) / seconds


def run_patient(base: str, graph: FakeGraphApi, number: int, latencies: list[float]) -> None:
    wa_id = f"3460{number:07d}"
    session = requests.Session()
    clock = int(time.time())
    for kind, value in SCRIPT:
        clock += 1
        raw, headers = signed_webhook(wa_id, inbound_message(kind, value.format(n=number), clock))
        graph.customer_wrote(wa_id)
        began = time.perf_counter()
        response = session.post(f"{base}/webhook", data=raw, timeout=30, headers=headers)
        latencies.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"patient {number}: HTTP {response.status_code}")


def check(graph: FakeGraphApi, components, patients: int, counts: list[int]) -> tuple[int, int]:
    """Return (patients with exactly the expected replies, archived records)."""
    exact = 0
    for number in range(patients):
        replies = graph.messages_to(f"3460{number:07d}")
        bodies = [str(reply["body"]) for reply in replies]
        if len(replies) == sum(counts) and len(set(bodies)) == len(bodies):
            exact += 1
    archived = sum(1 for _ in components.repos.archive.iter_records())
    return exact, archived


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    counts = expected_reply_counts()
    graph = FakeGraphApi("bench-token", "100000000000001", throughput_per_second=1000,
                         approved_templates=["intake_start"])  # fmt: skip
    with bench_stack() as (_stack, _kms, config), graph, tempfile.TemporaryDirectory() as folder:
        config = config.replace(graph_api_url=graph.base_url, meta_access_token="bench-token")
        components = fresh_components(config)
        raw_rate = empty_transaction_rate(components)
        log = Path(folder) / "gunicorn.log"
        with gunicorn(config, log, workers=args.workers, threads=args.threads) as base:
            latencies: list[float] = []
            began = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                futures = [pool.submit(run_patient, base, graph, n, latencies)
                           for n in range(args.patients)]  # fmt: skip
                for future in futures:
                    future.result()
            elapsed = time.perf_counter() - began
        exact, archived = check(graph, components, args.patients, counts)
    messages = len(latencies)
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"patients: {args.patients}  inbound messages: {messages}  "
          f"gunicorn: {args.workers} workers x {args.threads} threads  "
          f"concurrency: {args.concurrency}")  # fmt: skip
    print(f"inbound messages/s: {messages / elapsed:.1f}")
    print(f"ack latency ms: p50 {quantiles[49] * 1000:.0f}  p95 {quantiles[94] * 1000:.0f}  "
          f"p99 {quantiles[98] * 1000:.0f}")  # fmt: skip
    print(f"empty Firestore transactions/s (16 threads, same emulator): {raw_rate:.0f}  "
          f"-> messages/s as a share of it: {messages / elapsed / raw_rate:.0%}")  # fmt: skip
    print(f"patients with every reply exactly once: {exact}/{args.patients}  "
          f"records archived: {archived}/{args.patients}")  # fmt: skip
    if exact != args.patients or archived != args.patients:
        sys.exit(1)


if __name__ == "__main__":
    main()
