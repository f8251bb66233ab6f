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
from typing import Iterator

ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud metadata service for credentials
}


@contextlib.contextmanager
def local_s3(bucket: str = "eupe-test") -> Iterator[str]:
    """Start the server, create ``bucket``, set the environment; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update({**ENV, "AWS_ENDPOINT_URL": endpoint})
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()  # no client configured for another endpoint
        s3fs.S3FileSystem().mkdir(bucket)
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
