"""Publishing a training export (training/export.py ``_publish``) and reading it back (``read_export_manifest``,
``local_model_dir``): the previous export stays complete and loadable until the new one is, even when
the export is SIGKILLed midway, on a local disk and on S3 (moto's server on 127.0.0.1)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ultrachat import storage
from ultrachat.errors import ModelSourceError
from ultrachat.models.files import local_model_dir
from ultrachat.training import export
from ultrachat.training.export import CURRENT, EXPORT_MANIFEST, VERSIONS, _publish, read_export_manifest

KEY = "models.0.source"


def _export_src(root: Path, steps: int, shards: int = 3, shard_bytes: int = 1000) -> str:
    """A model dir as export_model leaves it: config.json, weights and the manifest."""
    src = root / f"src-{steps}"
    (src / "weights").mkdir(parents=True)
    (src / "config.json").write_text(json.dumps({"model_type": "llama", "steps": steps}))
    for i in range(shards):
        (src / "weights" / f"shard-{i:04d}.bin").write_bytes(bytes([steps % 256]) * shard_bytes)
    (src / EXPORT_MANIFEST).write_text(json.dumps({"steps": steps}))
    return str(src)


def _assert_complete(model_dir: str, steps: int, shards: int = 3) -> None:
    """A whole export of ``steps``: its config, manifest and every weight shard."""
    path = Path(model_dir)
    assert json.loads((path / "config.json").read_text())["steps"] == steps
    assert json.loads((path / EXPORT_MANIFEST).read_text()) == {"steps": steps}
    assert sorted(p.name for p in (path / "weights").iterdir()) == [f"shard-{i:04d}.bin" for i in range(shards)]


@pytest.fixture(autouse=True)
def model_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ULTRACHAT_CACHE", str(tmp_path / "cache"))


def _siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir())


# ------------------------------------------------------------------------------------ local disks


@pytest.mark.parametrize("swap", ["exchange", "fallback"])
def test_local_publish_replaces_the_export_whole(tmp_path, monkeypatch, swap):
    if swap == "fallback":  # as on a filesystem or OS without renameat2
        monkeypatch.setattr(export, "_exchange", lambda a, b: False)
    dest = tmp_path / "run" / "export"
    assert read_export_manifest(str(dest)) is None
    _publish(_export_src(tmp_path, 1), str(dest))
    _publish(_export_src(tmp_path, 2), str(dest))
    assert read_export_manifest(str(dest)) == {"steps": 2}
    _assert_complete(local_model_dir(str(dest), KEY), 2)
    _assert_complete(local_model_dir(dest.as_uri(), KEY), 2)
    assert _siblings(dest) == ["export"]  # no staging dir, no .previous left behind


def test_exchange_swaps_two_dirs_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "which").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "which").write_text("b")
    if not export._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this filesystem has no renameat2 RENAME_EXCHANGE (the fallback is tested above)")
    assert (tmp_path / "a" / "which").read_text() == "b" and (tmp_path / "b" / "which").read_text() == "a"
    with pytest.raises(FileNotFoundError):
        export._exchange(tmp_path / "a", tmp_path / "missing")


def test_readers_use_previous_while_the_fallback_swap_is_midway(tmp_path):
    dest = tmp_path / "run" / "export"
    _publish(_export_src(tmp_path, 1), str(dest))
    dest.rename(f"{dest}.previous")  # killed between the fallback's two renames
    assert read_export_manifest(str(dest)) == {"steps": 1}
    _assert_complete(local_model_dir(str(dest), KEY), 1)
    _assert_complete(local_model_dir(dest.as_uri(), KEY), 1)
    _publish(_export_src(tmp_path, 2), str(dest))
    assert read_export_manifest(str(dest)) == {"steps": 2} and _siblings(dest) == ["export"]


SLOW_PUBLISH = """
import os, shutil, sys, time
from ultrachat.training import export
src, dest, phase, swap = sys.argv[1:5]
if swap == "fallback":  # as on a filesystem or OS without renameat2
    export._exchange = lambda a, b: False
def slowed(call, started):  # each file takes 20 ms: time to kill the export in that phase
    def slow(*args, **kwargs):
        if not started:
            started.append(print("started", flush=True))
        time.sleep(0.02)
        return call(*args, **kwargs)
    return slow
if phase == "copy":  # copy2, and so copytree, looks copyfile up in shutil at each call
    shutil.copyfile = slowed(shutil.copyfile, [])
else:  # rmtree looks os.unlink up at each call; nothing is unlinked before an old export is deleted
    os.unlink = slowed(os.unlink, [])
export._publish(src, dest)
"""


def _kill_when(child: subprocess.Popen, ready, after_s: float = 0, timeout_s: float = 60) -> None:
    """SIGKILL ``child`` ``after_s`` after ``ready()`` holds; fail if it ends first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert child.poll() is None, f"the export finished (exit {child.returncode}) before it could be killed"
        assert time.monotonic() < deadline, "the export never got going"
        time.sleep(0.005)
    time.sleep(after_s)
    assert child.poll() is None, f"the export finished (exit {child.returncode}) before it could be killed"
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL


@pytest.mark.parametrize("swap", ["exchange", "fallback"])
@pytest.mark.parametrize("phase", ["copy", "delete"])
def test_local_export_killed_midway_leaves_a_whole_export(tmp_path, phase, swap):
    """SIGKILL while the new export is copied in, or while the old one is deleted after the swap: readers
    find one whole export, the old or the new, and the next export succeeds and clears the leftovers."""
    dest, shards = tmp_path / "run" / "export", 100
    _publish(_export_src(tmp_path, 1, shards=shards), str(dest))
    child = subprocess.Popen([sys.executable, "-c", SLOW_PUBLISH, _export_src(tmp_path, 2, shards=shards), str(dest),
                              phase, swap], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "started"
    _kill_when(child, lambda: True, after_s=0.15)  # about 7 files into the slowed phase
    steps = read_export_manifest(str(dest))["steps"]
    assert steps == (1 if phase == "copy" else 2)
    _assert_complete(local_model_dir(str(dest), KEY), steps, shards)
    _assert_complete(local_model_dir(dest.as_uri(), KEY), steps, shards)
    assert len(_siblings(dest)) > 1  # the partial copy or the half-deleted old export is still there
    _publish(_export_src(tmp_path, 3), str(dest))
    _assert_complete(local_model_dir(str(dest), KEY), 3)
    assert _siblings(dest) == ["export"]


# ------------------------------------------------------------------------------------ object stores


def _versions(dest: str) -> list[str]:
    from pyarrow import fs

    filesystem, root = storage.filesystem_for(storage.join(dest, VERSIONS))
    return sorted(e.base_name for e in filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True)))


def _current(dest: str) -> str:
    return json.loads(storage.read_text(storage.join(dest, CURRENT)))["version"]


def test_s3_publish_writes_versions_and_the_pointer_last(s3_env, tmp_path):
    dest = f"{s3_env}/{tmp_path.name}/export"
    copies = []
    for steps in (1, 2, 3):
        _publish(_export_src(tmp_path, steps), dest)
        assert read_export_manifest(dest) == {"steps": steps}
        copies.append(local_model_dir(dest, KEY))
        _assert_complete(copies[-1], steps)
    assert len(set(copies)) == 3  # each new version is a new copy, never the stale one
    assert local_model_dir(dest, KEY) == copies[-1]  # and copied once
    versions = _versions(dest)
    assert len(versions) == 2 and _current(dest) == versions[-1]  # the newest and the one it replaced


def test_s3_publish_over_a_plain_model_dir(s3_env, tmp_path):
    """A model dir another tool uploaded (config.json right under dest) reads as itself, then as the
    published version; its files go once no reader can still be copying them."""
    dest = f"{s3_env}/{tmp_path.name}/export"
    storage.upload_dir(_export_src(tmp_path, 1), dest)
    assert read_export_manifest(dest) == {"steps": 1}
    _assert_complete(local_model_dir(dest, KEY), 1)
    _publish(_export_src(tmp_path, 2), dest)
    _assert_complete(local_model_dir(dest, KEY), 2)
    assert storage.exists(storage.join(dest, "config.json"))  # kept for a reader mid-copy
    _publish(_export_src(tmp_path, 3), dest)
    assert not storage.exists(storage.join(dest, "config.json")) and not storage.exists(storage.join(dest, "weights"))
    _assert_complete(local_model_dir(dest, KEY), 3)


def test_a_damaged_pointer_is_a_clear_error_and_the_next_export_replaces_it(s3_env, tmp_path):
    dest = f"{s3_env}/{tmp_path.name}/export"
    _publish(_export_src(tmp_path, 1), dest)
    storage.write_text(storage.join(dest, CURRENT), '{"version": "../elsewhere"}')
    with pytest.raises(ModelSourceError, match=f"{KEY}: {dest}/CURRENT does not name an export version.*fix:"):
        local_model_dir(dest, KEY)
    _publish(_export_src(tmp_path, 2), dest)
    _assert_complete(local_model_dir(dest, KEY), 2)


def test_s3_export_killed_midway_keeps_the_previous_one(s3_env, tmp_path):
    dest = f"{s3_env}/{tmp_path.name}/export"
    _publish(_export_src(tmp_path, 1), dest)
    first = _current(dest)
    publish = "import sys; from ultrachat.training.export import _publish; _publish(sys.argv[1], sys.argv[2])"
    child = subprocess.Popen([sys.executable, "-c", publish, _export_src(tmp_path, 2, shards=400), dest],
                             env=os.environ.copy())
    _kill_when(child, lambda: len(_versions(dest)) > 1)  # the new version's first objects are in
    assert _current(dest) == first  # the pointer still names the complete export
    partial = [v for v in _versions(dest) if v != first]
    assert partial and not storage.exists(storage.join(dest, VERSIONS, partial[0], EXPORT_MANIFEST))
    assert read_export_manifest(dest) == {"steps": 1}
    _assert_complete(local_model_dir(dest, KEY), 1)
    _publish(_export_src(tmp_path, 3), dest)  # the next export succeeds and clears the partial version
    _assert_complete(local_model_dir(dest, KEY), 3)
    assert _versions(dest) == sorted([first, _current(dest)])
