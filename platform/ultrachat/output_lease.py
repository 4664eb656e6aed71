"""One owner per output dir: the job driver holds ``<output_dir>/_ultrachat_lease.json`` for its whole run.

Local paths, file:// URIs: created with O_CREAT|O_EXCL, every read-modify-write under an flock of the
dir. s3://: conditional PUTs (``If-None-Match: *`` creates, ``If-Match: <etag>`` renews or takes over):
the store picks one winner; release checks the ETag, then deletes (not every S3-compatible store has
conditional deletes). Other schemes (gs://, ...): best effort, NOT atomic: create if absent, read back.
Live while renewed_at + expiry_s lies ahead (renewed every expiry_s/4); an expired lease, or on local
disks one whose holder on this host is gone, is taken over with a warning. A held lease is watched
for up to wait_s: a renewal means a live run (refused), expiry means a killed driver (taken over).
Keep expiry_s >> clock skew.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Iterator

from ultrachat import storage
from ultrachat.config.base import LeaseSettings
from ultrachat.errors import OutputDirBusy

logger = logging.getLogger(__name__)
LEASE_FILE = "_ultrachat_lease.json"


class _FileStore:
    """The lease file on a filesystem; the token is its bytes. Like _S3Store: read() -> (body, token) or None;
    write(body, token) -> new token, or None if the file changed since ``token`` (None: if it exists)."""

    def __init__(self, output_dir: str):
        self.local = storage.local_path(output_dir)
        self.path = storage.join(self.local or output_dir, LEASE_FILE)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[bytes | None]:
        """The file's bytes, under an flock of the dir (local) or no lock (remote: best effort)."""
        with contextlib.ExitStack() as stack:
            if self.local is not None:  # flock conflicts between separate opens: threads and processes alike
                os.makedirs(self.local, exist_ok=True)
                stack.callback(os.close, fd := os.open(self.local, os.O_RDONLY))
                fcntl.flock(fd, fcntl.LOCK_EX)
            body = None
            with contextlib.suppress(FileNotFoundError):
                body = storage.read_text(self.path).encode()
            yield body

    def read(self) -> tuple[bytes, bytes] | None:
        with self._locked() as body:
            return None if body is None else (body, body)

    def write(self, body: bytes, token: bytes | None) -> bytes | None:
        with self._locked() as current:
            if current != token:
                return None
            if self.local is None:
                storage.write_text(self.path, body.decode())
                return body if (self.read() or (None,))[0] == body else None  # read back: another writer?
            fd = os.open(self.path, os.O_WRONLY | os.O_TRUNC | (os.O_CREAT | os.O_EXCL if token is None else 0))
            with os.fdopen(fd, "wb") as out:  # readers take the lock too: none sees a half-written file
                out.write(body)
            return body

    def delete(self, token: bytes) -> None:
        with self._locked() as current:
            if current == token:
                filesystem, inner = storage.filesystem_for(self.path)
                filesystem.delete_file(inner)


class _S3Store:
    """The lease object on S3 (or an S3-compatible store); the token is its ETag."""

    def __init__(self, uri: str):
        import boto3

        bucket, _, prefix = uri[len("s3://"):].partition("/")
        self.bucket, self.key = bucket, "/".join(p for p in (prefix.strip("/"), LEASE_FILE) if p)
        # boto3 reads AWS_ENDPOINT_URL_S3 and the keys itself, but not AWS_REGION (pyarrow's variable).
        self.client = boto3.client("s3", region_name=os.environ.get("AWS_REGION") or None)

    def read(self) -> tuple[bytes, str] | None:
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        return got["Body"].read(), got["ETag"]

    def write(self, body: bytes, token: str | None) -> str | None:
        condition = {"IfNoneMatch": "*"} if token is None else {"IfMatch": token}
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
        except self.client.exceptions.ClientError as err:  # 412: condition failed; 409: a concurrent one won
            if err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (404, 409, 412):
                return None
            raise

    def delete(self, token: str) -> None:
        if (self.read() or (None, None))[1] == token:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def _holder(body: bytes) -> tuple[dict, float]:
    try:  # the lease's record and when it expires (epoch seconds)
        record = json.loads(body)
        return record, datetime.fromisoformat(record["renewed_at"]).timestamp() + float(record["expiry_s"])
    except (ValueError, KeyError, TypeError):  # a damaged file: long expired
        return {"owner": None, "job": "?", "host": "?", "pid": None, "started_at": "?"}, 0.0


def _stale_reason(record: dict, expires: float, local: bool) -> str | None:
    if expires < time.time():
        return f"it expired at {_iso(expires)}"
    if local and record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
        try:
            os.kill(record["pid"], 0)
        except ProcessLookupError:
            return f"its holder, pid {record['pid']} on this host, is gone"
        except PermissionError:
            pass  # another user's live process
    return None


class _Lease:
    def __init__(self, output_dir: str, job: str, expiry_s: float):
        self.path = storage.join(output_dir, LEASE_FILE)
        self.store = _S3Store(output_dir) if output_dir.startswith("s3://") else _FileStore(output_dir)
        self.record = {"owner": uuid.uuid4().hex, "job": job, "host": socket.gethostname(), "pid": os.getpid(),
                       "started_at": _iso(time.time()), "renewed_at": _iso(time.time()), "expiry_s": expiry_s}
        self.poll_s = min(5.0, expiry_s / 8)  # sees a live holder's renewal (every expiry_s/4) in time

    def _write(self, token) -> bool:
        return self.store.write(json.dumps(self.record, indent=1).encode(), token) is not None

    def acquire(self, wait_s: float) -> None:
        give_up = time.monotonic() + wait_s
        first_seen = None  # the holder's renewed_at when we first looked: a change means it is alive
        while True:  # each pass decides, unless another driver changed the file meanwhile
            current = self.store.read()
            if current is None:
                if self._write(None):
                    return
                continue
            holder, expires = _holder(current[0])
            reason = _stale_reason(holder, expires, getattr(self.store, "local", None) is not None)
            if reason is None:
                renewal = (holder.get("owner"), holder.get("renewed_at"))
                left = give_up - time.monotonic()
                if first_seen is None:
                    first_seen = renewal
                    if left > 0:
                        logger.warning("%s is held by job %r (pid %s on %s); watching it for up to %.0f s: a "
                                       "holder that renews is alive, one that expires is taken over", self.path,
                                       holder["job"], holder["pid"], holder["host"], left)
                if renewal == first_seen and left > 0:
                    time.sleep(min(left, max(expires - time.time(), 0) + 0.05, self.poll_s))
                    continue
                raise OutputDirBusy(
                    f"{self.path} is held by another run: job {holder['job']!r} on host {holder['host']} "
                    f"(pid {holder['pid']}), running since {holder['started_at']}. Fix: wait for it to finish or "
                    f"use another output_dir; if you know that run is dead, delete {self.path} or wait until the "
                    f"lease expires at {_iso(expires)}")
            if self._write(current[1]):
                logger.warning("took over %s: %s. Its holder was %s", self.path, reason, holder)
                return

    def ours(self) -> tuple | None:
        current = self.store.read()
        return current if current and _holder(current[0])[0].get("owner") == self.record["owner"] else None

    def renew_until(self, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s):
            try:
                current = self.ours()
                if current is None:
                    logger.error("another run took over %s; fix: raise lease.expiry_s (renewals came late)", self.path)
                    return
                self.record["renewed_at"] = _iso(time.time())
                self._write(current[1])
            except Exception as err:  # a store hiccup: a later renewal may still come before expiry
                logger.warning("could not renew %s: %s", self.path, err)


@contextlib.contextmanager
def hold_output_dir(output_dir: str, job: str, settings: LeaseSettings) -> Iterator[None]:
    """Hold the output dir's lease around a job's run; OutputDirBusy while another live run holds it."""
    if not settings.enabled:
        yield
        return
    lease = _Lease(output_dir, job, settings.expiry_s)
    lease.acquire(settings.wait_s)
    stop = threading.Event()
    renewer = threading.Thread(target=lease.renew_until, args=(stop, settings.expiry_s / 4), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:  # released only if still ours (else the renewer logged it); errors must not hide the run's own
            if current := lease.ours():
                lease.store.delete(current[1])
        except Exception as err:
            logger.error("could not release %s: %s. Fix: delete it once this run has ended", lease.path, err)
