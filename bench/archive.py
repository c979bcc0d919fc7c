"""Archive throughput: records/s for archive() and iter_records() at 1k and 10k records.

Run: make bench, or .venv/bin/python bench/archive.py [--sizes 1000,10000] [--runs 3]
Prints the median of the runs and the number of KMS calls each phase made.
"""

from __future__ import annotations

import argparse
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from bench.common import bench_stack, fresh_components, median
from service.archive.records import archive_record
from tests.support.records import numbered_record


def run(sizes: list[int], runs: int, writers: int) -> None:
    with bench_stack() as (stack, kms, config):
        print(f"archive bench: sizes {sizes}, {runs} runs each, {writers} writer threads")
        print(f"{'records':>8} {'archive rec/s':>14} {'iter rec/s':>11} {'KMS calls':>10}")
        for size in sizes:
            write_rates, read_rates, kms_calls = [], [], []
            for run_index in range(runs):
                stack.clear_firestore(config.project_id)
                components = fresh_components(config)
                components.repos.bucket.delete_blobs(
                    [b for b in components.repos.bucket.list_blobs(prefix="intakes/")]
                )
                components.keys.forget()
                kms.reset_calls()
                start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=run_index)
                records = [numbered_record(index, start) for index in range(size)]
                began = time.perf_counter()
                with ThreadPoolExecutor(writers) as pool:
                    list(pool.map(functools.partial(archive_record, components), records))
                write_rates.append(size / (time.perf_counter() - began))
                began = time.perf_counter()
                count = sum(1 for _ in components.repos.archive.iter_records())
                read_rates.append(size / (time.perf_counter() - began))
                assert count == size, (count, size)
                kms_calls.append(sum(kms.calls.values()))
            print(
                f"{size:>8} {median(write_rates):>14.0f} {median(read_rates):>11.0f} "
                f"{max(kms_calls):>10}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--writers", type=int, default=16)
    args = parser.parse_args()
    run([int(size) for size in args.sizes.split(",")], args.runs, args.writers)


if __name__ == "__main__":
    main()
