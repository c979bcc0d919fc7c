"""Export throughput: CSV, XLSX and FHIR exports end to end (request to downloaded zip).

Run: make bench, or .venv/bin/python bench/export.py [--sizes 10000,100000]
[--formats csv,xlsx,fhir]

For each size it archives the records (many writer threads; sizes are filled incrementally),
seals the complete days as the nightly `records seal` job would (timed apart: it is not part
of an export), then runs each export in a child process, so the peak RSS printed is the
export's own: the child builds the app, asks GET /extractData through the Flask test client
and streams the download to a file. Beside it, from the same archive: the raw rate at which
the stack serves the same objects one GET each (16 threads, no decryption), the index read
rate, and the single-thread costs of decrypt + validate, of writing CSV/XLSX rows and FHIR
resources and of the AES zip, so the export's time can be read against each limit. With
both CSV and FHIR measured, it prints FHIR's time as a multiple of CSV's (the target: 2x).

fake-gcs-server runs with its filesystem backend here (--gcs-backend memory gives the tests'
stack): the memory backend keeps a bucket's objects in one list that every read and write
scans, so its writes slow down linearly with the objects stored (785/s at 3k, 202/s at 12k)
and archiving 100k records takes hours while measuring the emulator, not the export. Both
backends enforce if_generation_match=0; the filesystem one stays flat (~980 writes/s and
~1,200 GETs/s with 16 threads from 3k to 12k objects).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyzipper

from bench.common import (
    bench_stack,
    fresh_components,
    gcs_filesystem_backend,
    median,
)
from repositories.archive import reads as archive_module
from service.accounts import providers as provider_service
from service.archive.records import archive_record, seal_days
from service.domain.passwords import export_password, today_utc
from service.domain.record import from_json
from service.exports.fhir.resources import RecordMapper
from service.exports.formats import write_csv, write_xlsx
from service.shell.components import Components
from tests.support.records import numbered_record

START = datetime(2026, 1, 1, tzinfo=UTC)
SAMPLE = 5000  # records for the single-thread cost measurements
RAW_GET = "raw GET rate (16 threads)"
RAW_BATCH = "raw sealed-batch read rate"


def run(sizes: list[int], formats: list[str], runs: int, writers: int, backend: str) -> None:
    with _gcs_backend(backend), bench_stack() as (stack, kms, config):
        components = fresh_components(config)
        token = provider_service.create_provider(components.repos.providers, "Bench").token
        print(
            f"export bench: sizes {sizes}, formats {formats}, {runs} run(s), "
            f"fake-gcs-server {backend} backend, {os.cpu_count()} CPUs"
        )
        archived = 0
        for size in sorted(sizes):
            began = time.perf_counter()
            _archive(components, range(archived, size), writers)
            seconds = time.perf_counter() - began
            print(
                f"\n== {size} records (archived {size - archived} more in {seconds:.0f} s, "
                f"{(size - archived) / seconds:.0f} rec/s, {writers} writer threads)"
            )
            archived = size
            began = time.perf_counter()
            reports = seal_days(components)
            seconds = time.perf_counter() - began
            sealed = sum(report.records for report in reports if report.sealed)
            print(
                f"   sealed {sum(1 for report in reports if report.sealed)} day(s) holding "
                f"{sealed} records in {seconds:.1f} s ({sealed / seconds:.0f} rec/s): "
                "`records seal`, the nightly job, not part of an export"
            )
            limits = _limits(components, size)
            for name, (rate, note) in limits.items():
                print(f"   {name:<38} {rate:>8.0f} rec/s  {note}".rstrip())
            totals = {}
            for file_format in formats:
                results = [_child_export(config, token, file_format) for _ in range(runs)]
                totals[file_format] = _report(
                    file_format, size, results, limits[RAW_GET][0], limits[RAW_BATCH][0]
                )
            if "csv" in totals and "fhir" in totals:
                print(
                    f"   FHIR / CSV end to end: {totals['fhir'] / totals['csv']:.2f}x "
                    "(target: at most 2x)"
                )
            _purge_exports(components)


@contextlib.contextmanager
def _gcs_backend(backend: str):
    """Start fake-gcs-server with the given storage backend for this bench only."""
    if backend == "memory":
        yield
        return
    with tempfile.TemporaryDirectory(prefix="bench-gcs-") as root:
        with gcs_filesystem_backend(Path(root)):
            yield


def _archive(components: Components, indexes: range, writers: int) -> None:
    archive = functools.partial(archive_record, components)
    with ThreadPoolExecutor(writers) as pool:
        # In slices, so memory stays flat and Ctrl-C does not wait for 100k queued writes.
        for first in range(indexes.start, indexes.stop, 2000):
            last = min(first + 2000, indexes.stop)
            list(pool.map(archive, (numbered_record(i, START) for i in range(first, last))))


def _limits(components: Components, size: int) -> dict[str, tuple[float, str]]:
    """Measure what bounds an export: index reads, GETs, decryption, writing, zipping."""
    archive = components.repos.archive
    began = time.perf_counter()
    names = [entry.object_name for entry in archive.index_entries()]
    index_seconds = time.perf_counter() - began
    assert len(names) == size, (len(names), size)
    bucket = components.repos.bucket
    began = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        total_bytes = sum(len(data) for data in pool.map(_get(bucket), names))
    get_seconds = time.perf_counter() - began
    began = time.perf_counter()
    batches = archive.current_batches()
    for batch in batches:  # the bytes an export of sealed days reads, without parsing them
        blob = bucket.blob(batch.object_name, generation=batch.generation)
        with blob.open("rb", chunk_size=archive_module.BATCH_READ_CHUNK) as stream:
            while stream.read(archive_module.BATCH_READ_CHUNK):
                pass
    batch_seconds = time.perf_counter() - began
    batched = sum(batch.count for batch in batches)
    sample_names = names[:SAMPLE]
    with ThreadPoolExecutor(16) as pool:
        ciphertexts = list(pool.map(_get(bucket), sample_names))
    keyring = components.keys.keyring()
    began = time.perf_counter()
    records = [
        from_json(keyring.decrypt(data, name.rsplit("/", 1)[1].removesuffix(".tink").encode()))
        for name, data in zip(sample_names, ciphertexts, strict=True)
    ]
    decrypt_seconds = time.perf_counter() - began
    csv_file = io.BytesIO()
    began = time.perf_counter()
    write_csv(records, csv_file)
    csv_seconds = time.perf_counter() - began
    began = time.perf_counter()
    write_xlsx(records, io.BytesIO())
    xlsx_seconds = time.perf_counter() - began
    mapper = RecordMapper()
    began = time.perf_counter()
    for record in records:  # what bulk.write_fhir does per record, before compression
        for group in mapper.map(record).by_type().values():
            for fhir_resource in group:
                orjson.dumps(fhir_resource, option=orjson.OPT_APPEND_NEWLINE)
    fhir_seconds = time.perf_counter() - began
    began = time.perf_counter()
    with pyzipper.AESZipFile(
        io.BytesIO(), "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as zipped:
        zipped.setpassword(b"bench-password")
        zipped.setencryption(pyzipper.WZ_AES, nbits=256)
        zipped.writestr("intakes.csv", csv_file.getvalue())
    zip_seconds = time.perf_counter() - began
    count = len(records)
    csv_megabytes = len(csv_file.getvalue()) / 1e6
    return {
        f"index read (pages of {archive_module.PAGE_SIZE})": (
            size / index_seconds,
            f"{index_seconds:.1f} s",
        ),
        RAW_GET: (size / get_seconds, f"{total_bytes / size:.0f} B/object, {get_seconds:.1f} s"),
        RAW_BATCH: (
            batched / batch_seconds,
            f"{len(batches)} sealed day(s), {batch_seconds:.1f} s",
        ),
        "decrypt + validate (1 thread)": (count / decrypt_seconds, ""),
        "CSV rows written (1 thread)": (count / csv_seconds, ""),
        "XLSX rows written (1 thread)": (count / xlsx_seconds, ""),
        "FHIR resources made (1 thread)": (count / fhir_seconds, "records, uncompressed"),
        "AES-256 zip of the CSV (1 thread)": (
            count / zip_seconds,
            f"{csv_megabytes / zip_seconds:.0f} MB/s",
        ),
    }


def _get(bucket):
    def get(name: str) -> bytes:
        return bucket.blob(name).download_as_bytes()

    return get


def _child_export(config, token: str, file_format: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        result_path = Path(folder) / "result.json"
        env = {**os.environ, **config.to_env(), "BENCH_PROVIDER_TOKEN": token}
        subprocess.run(
            [sys.executable, __file__, "--child", file_format, "--result", str(result_path)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,  # the app's JSON log lines
        )
        result = json.loads(result_path.read_text())
        result["rows"] = _verify(Path(result.pop("zip_path")), file_format, config)
    return result


def _verify(zip_path: Path, file_format: str, config) -> int | None:
    """Open the downloaded zip with the day's password; count the CSV rows or FHIR Patients."""
    password = export_password(config.zip_password, today_utc()).password
    with pyzipper.AESZipFile(zip_path) as zipped:
        zipped.setpassword(password.encode())
        if file_format == "fhir":
            with zipped.open("Patient.ndjson") as patients:
                return sum(1 for _ in patients)
        data = zipped.read(f"intakes.{file_format}")
    if file_format != "csv":
        return None
    return sum(1 for _ in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))) - 1


def _report(
    file_format: str, size: int, results: list[dict], raw_rate: float, batch_rate: float
) -> float:
    """Print an export's figures; return its median time end to end."""
    for result in results:
        assert result["records"] == size, result
        assert result["rows"] in (None, size), result
    total = median([r["request_seconds"] + r["download_seconds"] for r in results])
    rate = size / total
    of_batch = f"{rate / batch_rate:.0%}" if batch_rate else "n/a"
    seconds = {key: median([r["seconds"][key] for r in results]) for key in results[0]["seconds"]}
    print(
        f"   {file_format.upper():<4} export end to end: {total:6.1f} s  {rate:6.0f} rec/s  "
        f"({rate / raw_rate:.0%} of the raw GET rate, {of_batch} of the raw batch read rate)  "
        f"zip {results[0]['zip_bytes'] / 1e6:.1f} MB"
    )
    print(
        "        request {:.1f} s = waiting for records {fetch_wait:.1f} s + writing {write:.1f} s"
        " + zipping {zip:.1f} s + upload {upload:.1f} s; download {:.1f} s".format(
            median([r["request_seconds"] for r in results]),
            median([r["download_seconds"] for r in results]),
            **seconds,
        )
    )
    read = results[0]["read"]
    print(
        f"        records read from sealed batches: {read['from_batches']}, "
        f"one GET each: {read['one_by_one']}"
    )
    print(
        f"        peak RSS of the export process: "
        f"{max(r['peak_rss_mb'] for r in results):.0f} MB "
        f"(app built, before the request: {max(r['rss_before_mb'] for r in results):.0f} MB)"
    )
    return total


def _purge_exports(components: Components) -> None:
    blobs = list(components.repos.bucket.list_blobs(prefix="exports/"))
    if blobs:
        components.repos.bucket.delete_blobs(blobs)


# -- the child process: one export, measured on its own -----------------------------------------
class _Timings(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = {}
        self.read: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "export created":
            self.seconds = record.seconds  # type: ignore[attr-defined]
            self.read = record.read  # type: ignore[attr-defined]


def child(file_format: str, result_path: Path) -> None:
    from service.shell.app import create_app
    from service.shell.config import Config

    app = create_app(Config.from_env(os.environ))
    timings = _Timings()
    logging.getLogger("service.exports.build").addHandler(timings)
    client = app.test_client()
    rss_before = _peak_rss_mb()
    headers = {"Authorization": f"Bearer {os.environ['BENCH_PROVIDER_TOKEN']}"}
    began = time.perf_counter()
    response = client.get(f"/extractData?format={file_format}", headers=headers)
    request_seconds = time.perf_counter() - began
    assert response.status_code == 200, response.get_data(as_text=True)
    zip_path = result_path.parent / "export.zip"
    began = time.perf_counter()
    download = client.get(response.json["download_url"], buffered=False)
    assert download.status_code == 200
    with open(zip_path, "wb") as file:
        for chunk in download.iter_encoded():
            file.write(chunk)
    download.close()
    download_seconds = time.perf_counter() - began
    result = {
        "records": response.json["records"],
        "request_seconds": request_seconds,
        "download_seconds": download_seconds,
        "seconds": timings.seconds,
        "read": timings.read,
        "zip_bytes": zip_path.stat().st_size,
        "zip_path": str(zip_path),
        "rss_before_mb": rss_before,
        "peak_rss_mb": _peak_rss_mb(),
    }
    result_path.write_text(json.dumps(result))


def _peak_rss_mb() -> float:
    """Return this process's peak RSS in MB.

    VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
    would report the bench parent's size (which grows with the records it archived).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--formats", default="csv,xlsx,fhir")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--gcs-backend", choices=("filesystem", "memory"), default="filesystem")
    parser.add_argument("--child", choices=("csv", "xlsx", "fhir"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.result)
        return
    run(
        [int(size) for size in args.sizes.split(",")],
        args.formats.split(","),
        args.runs,
        args.writers,
        args.gcs_backend,
    )


if __name__ == "__main__":
    main()
