"""Writing the worker directory: atomically, only inside it, and never over a file edited
since the last export unless asked to. The hashes of what nbworker wrote are kept in a
manifest.

Only inside: the directory given (`-o DIR`, followed if it is itself a link: the user named
it) is opened once, and every path below it is walked one folder at a time from that
folder's descriptor with O_NOFOLLOW, so a symbolic link anywhere under DIR (`tests ->
/elsewhere`, `handler.py -> ~/.bashrc`, the manifest) stops the export before anything is
written, and one swapped in while export runs makes the write fail instead of following it.
A file is written to a temporary name beside it and renamed over it: a new file gets the
mode the umask gives (as any program's `open()`), a replaced one keeps its mode.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nbworker.export.select import ExportError

__all__ = ["MANIFEST", "Written", "write_files"]

MANIFEST = ".nbworker-export.json"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_AT = os.name == "posix"  # *at() calls (dir_fd): POSIX; elsewhere, paths checked with lstat


@dataclass
class Written:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    overwritten_edits: list[str] = field(default_factory=list)  # with force


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Folder:
    """A folder under the worker directory, held open (its descriptor) where POSIX allows:
    what is below it is reached from it, never through a link."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def _where(self, name: str) -> str:
        return name if self.fd is not None else str(self.path / name)

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(self._where(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def child(self, name: str, *, create: bool) -> _Folder | None:
        """The folder `name` in this one (made if `create`); None if it is not there."""
        path = self.path / name
        if create and self.lstat(name) is None:
            os.mkdir(self._where(name), dir_fd=self.fd)
        found = self.lstat(name)
        if found is None:
            return None
        _refuse_odd(path, found, want_folder=True)
        if self.fd is None:
            return _Folder(path, None)
        return _Folder(path, os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=self.fd))

    def read(self, name: str) -> bytes:
        flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
        descriptor = os.open(self._where(name), flags, dir_fd=self.fd)
        with os.fdopen(descriptor, "rb") as file:
            return file.read()

    def replace(self, name: str, data: bytes, mode: int | None) -> None:
        """Write `name` atomically: a temporary file beside it, renamed over it."""
        temporary = f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
        descriptor = os.open(self._where(temporary), flags, 0o666, dir_fd=self.fd)
        try:
            with os.fdopen(descriptor, "wb") as file:
                if mode is not None and hasattr(os, "fchmod"):
                    os.fchmod(file.fileno(), mode)  # the replaced file's mode, as it was
                file.write(data)
            if mode is not None and not hasattr(os, "fchmod"):
                os.chmod(self._where(temporary), mode)
            if self.fd is not None:
                os.replace(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            else:
                os.replace(self._where(temporary), self._where(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self._where(temporary), dir_fd=self.fd)
            raise


def _refuse_odd(path: Path, found: os.stat_result, *, want_folder: bool) -> None:
    """Stop at a link, or at what is not the kind of thing export writes there."""
    if stat.S_ISLNK(found.st_mode):
        raise ExportError(
            f"{path} is a symbolic link: export writes only inside the worker directory and "
            "never through a link; remove the link (nothing was written)"
        )
    if want_folder and not stat.S_ISDIR(found.st_mode):
        raise ExportError(f"{path} is not a folder: export needs one there (nothing was written)")
    if not want_folder and not stat.S_ISREG(found.st_mode):
        kind = "a folder" if stat.S_ISDIR(found.st_mode) else "not a regular file"
        raise ExportError(f"{path} is {kind}: export writes a file there (nothing was written)")


def _parts(relative: str) -> tuple[list[str], str]:
    """(folders, file name) of a relative path that stays inside the worker directory."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ExportError(f"refusing to write {relative!r}: not a path inside the worker")
    return list(parts[:-1]), parts[-1]


def _open_root(directory: Path, *, create: bool) -> _Folder | None:
    """The worker directory, opened (made first if `create`); None if it does not exist."""
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        if not directory.exists():
            _check_creatable(directory)
            return None
        if not directory.is_dir():
            raise ExportError(
                f"{directory} is not a folder: give -o the worker's folder (nothing was written)"
            )
        fd = os.open(directory, os.O_RDONLY | _DIRECTORY) if _AT else None
    except ExportError:
        raise
    except OSError as err:
        raise ExportError(f"cannot use {directory} as the worker folder: {_reason(err)}") from None
    return _Folder(directory, fd)


def _check_creatable(directory: Path) -> None:
    """That the worker directory can be made: its nearest existing parent is a folder."""
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(
            f"cannot make the worker folder {directory}: {parent} is a file (nothing was written)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(
            f"cannot make the worker folder {directory}: {parent} is not writable "
            "(nothing was written)"
        )


def _reason(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "a symbolic link is in the way"
    return err.strerror or str(err)


def _existing(root: _Folder | None, relative: str) -> tuple[bytes, int] | None:
    """The bytes and mode of the file at `relative` under `root`, if there is one; refuses
    a link (or anything odd) on the way."""
    if root is None:
        return None
    folders, name = _parts(relative)
    try:
        with _descend(root, folders, create=False) as folder:
            if folder is None:
                return None
            found = folder.lstat(name)
            if found is None:
                return None
            _refuse_odd(folder.path / name, found, want_folder=False)
            return folder.read(name), stat.S_IMODE(found.st_mode)
    except OSError as err:
        raise ExportError(f"cannot read {root.path / relative}: {_reason(err)}") from None


def _write(root: _Folder, relative: str, data: bytes, mode: int | None) -> None:
    folders, name = _parts(relative)
    try:
        with _descend(root, folders, create=True) as folder:
            assert folder is not None
            folder.replace(name, data, mode)
    except OSError as err:
        raise ExportError(f"cannot write {root.path / relative}: {_reason(err)}") from None


@contextlib.contextmanager
def _descend(root: _Folder, folders: Sequence[str], *, create: bool) -> Iterator[_Folder | None]:
    """The folder `folders` down from `root`, opened one link-refusing step at a time (None
    when one is missing and not `create`); the folders opened on the way are closed after."""
    opened: list[_Folder] = []
    try:
        folder = root
        for part in folders:
            child = folder.child(part, create=create)
            if child is None:
                yield None
                return
            opened.append(child)
            folder = child
        yield folder
    finally:
        for child in opened:
            child.close()


def write_files(directory: Path, files: dict[str, str], *, force: bool = False) -> Written:
    """Write `files` (relative path -> text) under `directory`. A file that exists and is
    not what the last export wrote (edited by hand, or never written by nbworker) stops the
    export before anything is written, unless `force`; so does a link or a file where a
    folder goes (with force too)."""
    directory = Path(directory)
    for relative in files:
        _parts(relative)  # refuses a path out of the worker before anything else
    root = _open_root(directory, create=False)
    try:
        manifest: dict[str, str] = {}
        manifest_file = _existing(root, MANIFEST)
        if manifest_file is not None:
            try:
                manifest = json.loads(manifest_file[0].decode("utf-8"))["files"]
            except (ValueError, KeyError, TypeError):
                manifest = {}
            if not isinstance(manifest, dict):
                manifest = {}
        result = Written()
        pending: dict[str, tuple[bytes, int | None]] = {}
        edited = []
        for relative, text in sorted(files.items()):
            data = text.encode("utf-8")
            existing = _existing(root, relative)
            if existing is not None:
                current = _digest(existing[0])
                if current == _digest(data):
                    result.unchanged.append(relative)
                    continue
                if manifest.get(relative) != current:
                    edited.append(relative)
            pending[relative] = (data, None if existing is None else existing[1])
        if edited and not force:
            raise ExportError(
                f"{', '.join(edited)} in {directory} changed since nbworker last wrote "
                f"{'it' if len(edited) == 1 else 'them'} (or nbworker never did): nothing was "
                "written. Move the change into the notebook, or export with --force to overwrite."
            )
        result.overwritten_edits = edited
        hashes = {relative: _digest(text.encode("utf-8")) for relative, text in files.items()}
        record = (json.dumps({"files": dict(sorted(hashes.items()))}, indent=2) + "\n").encode()
        if root is None:
            root = _open_root(directory, create=True)
            assert root is not None
        for relative, (data, mode) in pending.items():
            _write(root, relative, data, mode)
            result.written.append(relative)
        if manifest_file is None or manifest_file[0] != record:
            _write(root, MANIFEST, record, None if manifest_file is None else manifest_file[1])
        return result
    finally:
        if root is not None:
            root.close()
