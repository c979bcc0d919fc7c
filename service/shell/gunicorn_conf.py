"""gunicorn's settings, the same in the container, `make run` and the tests:
`gunicorn -c python:service.shell.gunicorn_conf service.wsgi:app`.

Options given on the command line override these (the tests bind to a free local port).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_class = "gthread"
timeout = 60
keepalive = 5
# Cloud Run sends SIGTERM and waits 10 s before SIGKILL: finishing requests and the sender's
# drain (SENDER_DRAIN_SECONDS, 5 s by default) fit within gunicorn's graceful timeout, below that.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "8"))
# The app writes its own JSON access line.
accesslog = None


def post_worker_init(worker: Any) -> None:
    """Take over Ctrl-C (SIGINT) and SIGQUIT, gunicorn's quick shutdown, in each worker.

    gunicorn's own handler first shuts its thread pool down under a lock; Ctrl-C reaches the
    worker twice at once (SIGINT from the terminal, SIGQUIT from the master), and the second
    handler, run inside the first, waited on that lock for ever, until the master's SIGKILL.
    This one runs once (a second signal returns at once) and then leaves; see worker_int.
    """

    def quit_now(signum: int, frame: Any) -> None:
        if getattr(worker, "quitting", False):
            return
        worker.quitting = True
        worker.alive = False
        worker_int(worker)

    signal.signal(signal.SIGINT, quit_now)
    signal.signal(signal.SIGQUIT, quit_now)


def worker_int(worker: Any) -> None:
    """Ctrl-C (SIGINT) or SIGQUIT: gunicorn's quick shutdown.

    Send what the sender holds (for at most its drain time), then leave at once: exiting the
    normal way would wait for request threads that may be stuck on a call to a server that no
    longer answers (the simulator posts to its own webhook), until gunicorn's graceful timeout
    ran out and it sent SIGKILL. What is left unsent stays leased in Firestore for the next
    process.
    """
    from service.conversation.sender import stop_senders

    # Whatever the drain meets (a lock held where the signal landed, a stuck call), the
    # worker leaves half a second after its drain time: never gunicorn's SIGKILL.
    drain = float(os.environ.get("SENDER_DRAIN_SECONDS") or 5)
    watchdog = threading.Timer(drain + 0.5, os._exit, args=(0,))
    watchdog.daemon = True
    watchdog.start()
    stop_senders()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
