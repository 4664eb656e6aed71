"""The output dir's lease (output_lease.py): on local disks and on S3 through conditional PUTs against
a real S3 API (moto's server on 127.0.0.1, from tests/conftest.py)."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from ultrachat import storage
from ultrachat.config.base import LeaseSettings
from ultrachat.errors import OutputDirBusy
from ultrachat.output_lease import LEASE_FILE, _FileStore, _Lease, _S3Store, hold_output_dir

SETTINGS = LeaseSettings(wait_s=0)  # refuse at first sight; the waiting has its own tests


def _lease_record(output_dir: str) -> dict:
    return json.loads(storage.read_text(storage.join(output_dir, LEASE_FILE)))


def _foreign_lease(output_dir: str, *, host: str, pid: int, age_s: float, expiry_s: float = 60) -> None:
    """A lease another run wrote, last renewed ``age_s`` ago."""
    renewed = (datetime.now(timezone.utc) - timedelta(seconds=age_s)).isoformat(timespec="milliseconds")
    record = {"owner": "someone-else", "job": "generate", "host": host, "pid": pid, "started_at": renewed,
              "renewed_at": renewed, "expiry_s": expiry_s}
    storage.write_text(storage.join(output_dir, LEASE_FILE), json.dumps(record))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(params=["path", "file_uri"])
def out(request, tmp_path):
    return str(tmp_path / "run") if request.param == "path" else f"file://{tmp_path}/run"


# ------------------------------------------------------------------------------------ local disks


def test_held_for_the_run_and_released_on_exit(out):
    with hold_output_dir(out, "train", SETTINGS):
        record = _lease_record(out)
        assert record["job"] == "train" and record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        assert record["expiry_s"] == 120 and len(record["owner"]) == 32
        assert datetime.fromisoformat(record["started_at"]) <= datetime.fromisoformat(record["renewed_at"])
    assert not storage.exists(storage.join(out, LEASE_FILE))


def test_released_when_the_run_raises(out):
    with pytest.raises(RuntimeError, match="boom"):
        with hold_output_dir(out, "train", SETTINGS):
            raise RuntimeError("boom")
    assert not storage.exists(storage.join(out, LEASE_FILE))
    with hold_output_dir(out, "train", SETTINGS):  # free again
        pass


def test_a_second_run_is_refused_naming_the_holder_and_the_fix(out):
    with hold_output_dir(out, "train", SETTINGS):
        with pytest.raises(OutputDirBusy) as info:
            with hold_output_dir(out, "generate", SETTINGS):
                pytest.fail("entered a held output dir")
        assert _lease_record(out)["job"] == "train"  # the refusal left the holder's lease alone
    message = str(info.value)
    for words in (storage.join(out, LEASE_FILE), "job 'train'", f"host {socket.gethostname()}", f"pid {os.getpid()}",
                  "running since", "another output_dir", "delete", "lease expires at"):
        assert words in message, message


def test_a_holder_in_another_process_refuses_us(tmp_path):
    out = str(tmp_path / "run")
    code = ("import sys; from ultrachat.output_lease import hold_output_dir; from ultrachat.config.base import "
            f"LeaseSettings\nwith hold_output_dir({out!r}, 'serve', LeaseSettings()):\n"
            "    print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirBusy, match=f"job 'serve' on host .* \\(pid {holder.pid}\\)"):
            with hold_output_dir(out, "train", SETTINGS):
                pass
        holder.communicate("\n", timeout=30)  # the holder finishes and releases
    finally:
        holder.kill()
    assert holder.returncode == 0
    with hold_output_dir(out, "train", SETTINGS):
        assert _lease_record(out)["job"] == "train"


def test_an_expired_lease_is_taken_over_with_a_warning(out, caplog):
    _foreign_lease(out, host="elsewhere", pid=1, age_s=61, expiry_s=60)
    with caplog.at_level(logging.WARNING, logger="ultrachat.output_lease"):
        with hold_output_dir(out, "train", SETTINGS):
            assert _lease_record(out)["job"] == "train"
    assert "took over" in caplog.text and "expired" in caplog.text


def test_a_live_lease_of_another_host_is_refused_even_with_a_pid_unknown_here(out):
    _foreign_lease(out, host="elsewhere", pid=_dead_pid(), age_s=1)
    with pytest.raises(OutputDirBusy, match="job 'generate' on host elsewhere"):
        with hold_output_dir(out, "train", SETTINGS):
            pass


def test_a_dead_holder_on_this_host_is_taken_over(out, caplog):
    pid = _dead_pid()
    _foreign_lease(out, host=socket.gethostname(), pid=pid, age_s=1)
    with caplog.at_level(logging.WARNING, logger="ultrachat.output_lease"):
        with hold_output_dir(out, "train", SETTINGS):
            assert _lease_record(out)["owner"] != "someone-else"
    assert f"pid {pid} on this host, is gone" in caplog.text


def test_a_killed_drivers_lease_is_waited_out_and_taken_over(out, caplog):
    """A RayJob retry on a new pod finds the lease of the killed driver: it waits for it to expire."""
    _foreign_lease(out, host="elsewhere", pid=1, age_s=0, expiry_s=0.6)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ultrachat.output_lease"):
        with hold_output_dir(out, "train", LeaseSettings(wait_s=10)):
            assert _lease_record(out)["job"] == "train"
    assert 0.4 < time.monotonic() - started < 5
    assert "watching it for up to" in caplog.text and "took over" in caplog.text and "expired" in caplog.text


def test_a_live_holder_is_refused_at_its_next_renewal_not_after_the_wait(out):
    with hold_output_dir(out, "serve", LeaseSettings(expiry_s=0.8)):  # renews every 0.2 s
        started = time.monotonic()
        with pytest.raises(OutputDirBusy, match="job 'serve'"):
            with hold_output_dir(out, "train", LeaseSettings(expiry_s=0.8, wait_s=30)):
                pass
        assert time.monotonic() - started < 5
        assert _lease_record(out)["job"] == "serve"


def test_a_damaged_lease_file_is_taken_over(out):
    storage.write_text(storage.join(out, LEASE_FILE), '{"owner": "half-writ')
    with hold_output_dir(out, "train", SETTINGS):
        assert _lease_record(out)["job"] == "train"


def test_renewal_keeps_a_long_run_live(out):
    with hold_output_dir(out, "train", LeaseSettings(expiry_s=0.4)):
        first = _lease_record(out)["renewed_at"]
        time.sleep(1.0)  # 2.5 expiries: without renewals the lease would be long expired
        record = _lease_record(out)
        renewed = datetime.fromisoformat(record["renewed_at"])
        assert renewed > datetime.fromisoformat(first)
        assert renewed + timedelta(seconds=record["expiry_s"]) > datetime.now(timezone.utc)


def test_a_taken_over_lease_is_reported_and_left_to_its_new_owner(out, caplog):
    with caplog.at_level(logging.ERROR, logger="ultrachat.output_lease"):
        with hold_output_dir(out, "train", LeaseSettings(expiry_s=0.2)):
            _foreign_lease(out, host="elsewhere", pid=1, age_s=0)  # as if our renewals had stopped
            time.sleep(0.3)
    assert "another run took over" in caplog.text
    assert _lease_record(out)["owner"] == "someone-else"  # not deleted on exit: it is not ours


def test_disabled_takes_no_lease(out):
    with hold_output_dir(out, "train", LeaseSettings(enabled=False)):
        assert not storage.exists(storage.join(out, LEASE_FILE))


def _race(output_dir: str, takers: int) -> list[str]:
    """``takers`` drivers try to take one output dir at once; returns 'won' or 'refused' for each."""
    barrier, results = threading.Barrier(takers), []
    leases = [_Lease(output_dir, f"job{i}", 60) for i in range(takers)]

    def take(lease):
        barrier.wait()
        try:
            lease.acquire(wait_s=0)
            results.append("won")
        except OutputDirBusy:
            results.append("refused")

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


def test_racing_takers_of_an_expired_local_lease_one_wins(out):
    _foreign_lease(out, host="elsewhere", pid=1, age_s=100)
    assert _race(out, 6) == ["refused"] * 5 + ["won"]


def test_local_read_modify_writes_wait_for_the_dir_lock(tmp_path):
    """What makes the race above safe across processes too: a taker between its read and its write holds
    the dir's flock, and every other write waits for it."""
    store = _FileStore(str(tmp_path))
    done = []
    with store._locked():
        writer = threading.Thread(target=lambda: done.append(store.write(b"x", None)))
        writer.start()
        writer.join(0.3)
        assert writer.is_alive() and not done
    writer.join(10)
    assert done == [b"x"] and store.read() == (b"x", b"x")


# ------------------------------------------------------------------------------------ s3


def test_s3_conditional_puts_are_honoured(s3_env):
    """The store itself refuses a create over an existing object and a replace with a stale ETag (moto
    honours If-None-Match and If-Match on PutObject, like S3)."""
    store = _S3Store(f"{s3_env}/cond")
    first = store.write(b"one", None)
    assert first and store.read() == (b"one", first)
    assert store.write(b"two", None) is None  # If-None-Match: * on an existing key
    second = store.write(b"two", first)
    assert second and second != first and store.read() == (b"two", second)
    assert store.write(b"three", first) is None  # If-Match with a stale ETag
    store.delete(first)  # not ours any more: left in place
    assert store.read()[0] == b"two"
    store.delete(second)
    assert store.read() is None


def test_s3_lease_create_refuse_release(s3_env):
    out = f"{s3_env}/runs/a"
    with hold_output_dir(out, "train", SETTINGS):
        assert _lease_record(out)["job"] == "train"
        with pytest.raises(OutputDirBusy, match=f"{out}/{LEASE_FILE} is held by another run: job 'train'"):
            with hold_output_dir(out, "generate", SETTINGS):
                pass
    assert not storage.exists(f"{out}/{LEASE_FILE}")


def test_s3_dead_pid_is_not_judged_remotely_but_expiry_is(s3_env, caplog):
    out = f"{s3_env}/runs/b"
    _foreign_lease(out, host=socket.gethostname(), pid=_dead_pid(), age_s=1)
    with pytest.raises(OutputDirBusy):  # another node may share our host name: only expiry counts here
        with hold_output_dir(out, "train", SETTINGS):
            pass
    _foreign_lease(out, host="elsewhere", pid=1, age_s=61, expiry_s=60)
    with caplog.at_level(logging.WARNING, logger="ultrachat.output_lease"):
        with hold_output_dir(out, "train", SETTINGS):
            assert _lease_record(out)["job"] == "train"
    assert "took over" in caplog.text


def test_s3_renewal_keeps_the_lease_live(s3_env):
    out = f"{s3_env}/runs/c"
    with hold_output_dir(out, "train", LeaseSettings(expiry_s=0.6)):
        time.sleep(1.5)
        with pytest.raises(OutputDirBusy):
            with hold_output_dir(out, "generate", SETTINGS):
                pass


def test_s3_racing_takers_of_an_expired_lease_one_wins(s3_env):
    out = f"{s3_env}/runs/d"
    # moto checks If-Match and then stores the object in two Python steps of its request handler (S3 does
    # both atomically); the server runs in this process, so a long GIL switch interval keeps each
    # request's check-and-store in one piece while the requests themselves still race over HTTP.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        for attempt in range(3):
            _foreign_lease(out, host="elsewhere", pid=1, age_s=100)
            assert _race(out, 4) == ["refused"] * 3 + ["won"], attempt
    finally:
        sys.setswitchinterval(interval)
