"""A real S3-compatible server (moto's server mode) on 127.0.0.1 for the object-storage tests.

``local_s3()`` starts the server on a free loopback port, creates a bucket and points every
S3 client of this process and its children at it through the environment (``AWS_ENDPOINT_URL``
and dummy credentials), which is how a user points the feature store at their own endpoint.
Only 127.0.0.1 is ever contacted. Nothing here mocks a client: s3fs and zarr talk HTTP to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from typing import Iterator

ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud metadata service for credentials
}


@contextlib.contextmanager
def local_s3(bucket: str = "eupe-test", own_process: bool = False) -> Iterator[str]:
    """Start the server, create ``bucket``, set the environment; yields the endpoint URL.

    ``own_process``: run the server as a child process (benchmarks: its CPU time is not ours),
    else as a thread of this process (tests: starts in well under a second).
    """
    with (_child_server() if own_process else _threaded_server()) as endpoint, _configured(endpoint, bucket):
        yield endpoint


@contextlib.contextmanager
def _threaded_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def _child_server() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def _configured(endpoint: str, bucket: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update({**ENV, "AWS_ENDPOINT_URL": endpoint})
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # no client configured for another endpoint
        s3fs.S3FileSystem().mkdir(bucket)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
