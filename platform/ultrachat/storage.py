"""Paths that may be local or remote: every input and output accepts a local path or a
pyarrow/fsspec URI (s3://, gs://, file://). Small text artifacts go through here."""

from __future__ import annotations

import posixpath
from pathlib import Path


def is_uri(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return posixpath.join(base, *parts)
    return str(Path(base, *parts))


def filesystem_for(path: str):
    """(pyarrow filesystem, path inside it) for a local path or any pyarrow URI."""
    from pyarrow import fs

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
    filesystem.create_dir(posixpath.dirname(inner), recursive=True)
    with filesystem.open_output_stream(inner) as stream:
        stream.write(text.encode("utf-8"))
    return path


def read_text(path: str) -> str:
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
