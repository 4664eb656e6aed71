"""Paths that may be local or remote: every input and output accepts a local path or a
pyarrow URI (s3://, gs://, file://, ...). Small text artifacts and whole folders go through here.

Endpoints and credentials come from the environment, never from the URI, so the same config runs
against AWS, GCS or any S3-compatible store (MinIO, R2, a moto server in tests): pyarrow's
``FileSystem.from_uri`` (used here, by Ray Data and by Ray Train) reads AWS_ENDPOINT_URL_S3 (or
AWS_ENDPOINT_URL; an ``http://`` endpoint switches to plain HTTP), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_REGION; GCS uses Google's default credentials.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

# Schemes pyarrow's FileSystem.from_uri resolves (and Ray Data / Ray Train with it), and hf:// for
# inputs read from the Hugging Face Hub by name (huggingface_hub's fsspec filesystem; read-only).
SCHEMES = ("s3", "gs", "gcs", "file", "hdfs", "abfs", "abfss", "hf")
HUB = "hf://"
HUB_HINT = ("hf:// paths read the Hugging Face Hub by name (hf://datasets/OWNER/NAME/path, globs allowed in the "
            "file name): the machine needs internet and HF_HUB_OFFLINE unset (HF_TOKEN for gated data). Without "
            "internet, copy the dataset's Parquet files to local disk or a bucket and point the path there")


def is_uri(path: str) -> bool:
    return "://" in path


def check_path(path: str) -> str:
    """A config validator for an input or output location: a local path or a URI pyarrow resolves.

    Options in the URI (``?endpoint_override=...``) are refused: joined sub-paths and the URIs Ray
    passes between processes would drop them, so the store is configured once, in the environment.
    """
    if not is_uri(path):
        return path
    scheme, _, rest = path.partition("://")
    if scheme.lower() not in SCHEMES:
        raise ValueError(f"unsupported scheme {scheme + '://'!r} in {path!r}; fix: use a local path or one of "
                         f"{', '.join(s + '://' for s in SCHEMES)}")
    if "?" in rest or "#" in rest:
        raise ValueError(f"{path!r} carries URI options; fix: drop the '?...' part and configure the store in "
                         f"the environment (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    if scheme.lower() == "hf":
        if not rest.startswith("datasets/") or len(rest.split("/")) < 3:
            raise ValueError(f"{path!r} is not a Hub dataset path; fix: hf://datasets/OWNER/NAME[/folder or "
                             f"file, e.g. data/train_sft-*.parquet]")
    elif scheme.lower() == "file":
        if not rest.startswith("/"):
            raise ValueError(f"{path!r} is not an absolute file URI; fix: file:///absolute/path (three slashes)")
    elif not rest.split("/", 1)[0]:
        raise ValueError(f"{path!r} names no bucket; fix: {scheme}://bucket/prefix")
    return path


# A config key holding an input or output location.
StoragePath = Annotated[str, AfterValidator(check_path)]


def local_path(path: str) -> str | None:
    """The local path behind a plain path or a ``file://`` URI; None for a remote store."""
    if not is_uri(path):
        return path
    if path.startswith("file://"):
        return path[len("file://"):]
    return None


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return posixpath.join(base, *parts)
    return str(Path(base, *parts))


def filesystem_for(path: str):
    """(pyarrow filesystem, path inside it) for a local path or any pyarrow URI."""
    from pyarrow import fs

    if path.startswith(HUB):
        from huggingface_hub import HfFileSystem

        return fs.PyFileSystem(fs.FSSpecHandler(HfFileSystem())), path[len(HUB):]
    if is_uri(path):
        return fs.FileSystem.from_uri(path)
    return fs.LocalFileSystem(), path


def write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` (creating parent folders), return the path written."""
    if not is_uri(path):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return str(target)
    filesystem, inner = filesystem_for(path)
    try:
        filesystem.create_dir(posixpath.dirname(inner), recursive=True)
        with filesystem.open_output_stream(inner) as stream:
            stream.write(text.encode("utf-8"))
    except OSError as err:
        raise _explained(err, path, "write") from err
    return path


def read_text(path: str) -> str:
    """The file's text; FileNotFoundError when it does not exist (local or remote)."""
    if not is_uri(path):
        return Path(path).read_text(encoding="utf-8")
    filesystem, inner = filesystem_for(path)
    with filesystem.open_input_stream(inner) as stream:
        return stream.read().decode("utf-8")


def exists(path: str) -> bool:
    from pyarrow import fs

    filesystem, inner = filesystem_for(path)
    return filesystem.get_file_info(inner).type != fs.FileType.NotFound


def remove_dir(path: str) -> None:
    """Delete a folder and everything under it; a missing folder is fine."""
    if exists(path):
        filesystem, inner = filesystem_for(path)
        filesystem.delete_dir(inner)


def upload_dir(local_dir: str, dest: str, last: tuple[str, ...] = ()) -> None:
    """Replace the folder ``dest`` (any URI) with the files of ``local_dir``.

    Object stores have no atomic folder rename: the files named in ``last`` (relative paths, e.g. a
    manifest that marks the folder complete) are removed first and written after everything else, so
    a reader that checks for them never takes a half-written folder for a finished one.
    """
    from pyarrow import fs

    filesystem, root = filesystem_for(dest)
    local = fs.LocalFileSystem()
    try:
        for name in last:
            if filesystem.get_file_info(posixpath.join(root, name)).type == fs.FileType.File:
                filesystem.delete_file(posixpath.join(root, name))
        filesystem.delete_dir_contents(root, missing_dir_ok=True)
        filesystem.create_dir(root, recursive=True)
        files = sorted(p.relative_to(local_dir).as_posix() for p in Path(local_dir).rglob("*") if p.is_file())
        for parent in sorted({posixpath.dirname(f) for f in files} - {""}):
            filesystem.create_dir(posixpath.join(root, parent), recursive=True)
        for name in [f for f in files if f not in last] + [f for f in files if f in last]:
            fs.copy_files(str(Path(local_dir, name)), posixpath.join(root, name), source_filesystem=local,
                          destination_filesystem=filesystem)
    except OSError as err:
        raise _explained(err, dest, "write") from err


def download_dir(source: str, local_dir: str) -> None:
    """Copy every file under the folder ``source`` (any URI) into the local folder ``local_dir``."""
    from pyarrow import fs

    filesystem, inner = filesystem_for(source)
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    fs.copy_files(inner, local_dir, source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())


STORE_HINT = ("Fix: create the bucket first (jobs never create buckets) and check the store's settings in the "
              "environment of the job and its Ray workers: AWS_ENDPOINT_URL_S3 for an S3-compatible store, "
              "AWS_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or GCS default credentials for gs://)")


def _explained(err: OSError, path: str, action: str) -> OSError:
    # The store's own message rarely says what to check; a missing bucket or endpoint is the usual cause.
    return OSError(f"cannot {action} {path}: {err}" + ("" if local_path(path) else f". {STORE_HINT}"))
