"""The one way mlip writes output files: complete or not at all, and one clear line when it cannot.

    with atomic_open("run/summary.json") as fh:   # text ("w") or bytes ("wb")
        json.dump(summary, fh)
    atomic_write("model.pt", data)                # bytes or str in one call
    log = open_append("run/metrics.csv")          # an appended log whose writes are checked
    ensure_dir("run/checkpoints")

`atomic_open` writes to a temporary file in the target's directory (so the rename cannot cross file
systems), flushes and fsyncs it, renames it over the target and fsyncs the directory (through a
symlink: over the file it points to; a device or pipe such as /dev/null is written directly, never
replaced). Any failure
(a full file system, a read-only one, a missing directory, `/proc`, a file-size limit, an exception in
the caller's block) removes the temporary file and leaves a previous file at `path` untouched. An
`OSError` becomes a `WriteError` "cannot write PATH: REASON" — a `ValueError` too, so the command line
prints it as one line (exit code 2) — and every other exception passes through unchanged.

Serialisers that write through C++ (torch.save, torch.jit.save) go through `atomic_write_buffered`:
into an `io.BytesIO` first, then the bytes to `atomic_write` (their own file writers abort the process
with a c10::Error on a failed write).
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import uuid
from typing import IO, Any, Callable, Iterator, Optional, Union

__all__ = ["WriteError", "atomic_open", "atomic_write", "atomic_write_buffered", "ensure_dir", "open_append", "CheckedFile"]

_TMP_TAG = ".mlip-tmp-"


class WriteError(OSError, ValueError):
    """An output could not be written; the message names the file and the reason in one line."""

    def __str__(self) -> str:  # not OSError's "[Errno N] ..." form
        return self.strerror if self.strerror else super().__str__()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def write_error(path: str, exc: BaseException) -> WriteError:
    if isinstance(exc, WriteError):
        return exc
    err = exc.errno if isinstance(exc, OSError) else None
    return WriteError(err, f"cannot write {path}: {_reason(exc)}") if err else WriteError(
        f"cannot write {path}: {_reason(exc)}")


def ensure_dir(path: str) -> str:
    """Create directory `path` (and its parents) if needed; a `WriteError` naming it otherwise."""
    path = os.fspath(path)
    if not path:
        raise WriteError(errno.ENOENT, "cannot create a directory with an empty name")
    if os.path.isdir(path):
        return path
    up = path
    while up and not os.path.exists(up) and os.path.dirname(up) != up:
        up = os.path.dirname(up)
    if up and os.path.exists(up) and not os.path.isdir(up):
        raise WriteError(errno.ENOTDIR, f"cannot create directory {path}: {up} is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot create directory {path}: {_reason(exc)}") from None
    return path


def _check_target(path: str) -> str:
    if not path:
        raise WriteError(errno.ENOENT, "cannot write an output file with an empty name")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise WriteError(errno.EISDIR, f"cannot write {path}: it is a directory")
    if not os.path.isdir(directory):
        raise WriteError(errno.ENOENT, f"cannot write {path}: directory {directory} does not exist")
    return directory


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory: the rename is still atomic
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Union[str, os.PathLike], mode: str = "w", encoding: Optional[str] = None,
                newline: Optional[str] = None) -> Iterator[IO[Any]]:
    """A file object for `mode` "w" (text) or "wb" whose content replaces `path` only when the block
    ends without an exception (see the module docstring)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        with _direct(path, mode, encoding, newline) as fh:  # a device or pipe: never replaced
            yield fh
        return
    real = os.path.realpath(path) if os.path.islink(path) else path  # write through a symlink
    directory = _check_target(real)
    tmp = os.path.join(directory, f".{os.path.basename(path)}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    except OSError as exc:
        raise WriteError(exc.errno, f"cannot write {path}: cannot create a file in {directory}: "
                                    f"{_reason(exc)}") from None
    try:
        if mode == "wb":
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, real)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    _fsync_dir(directory)


@contextlib.contextmanager
def _direct(path: str, mode: str, encoding: Optional[str], newline: Optional[str]) -> Iterator[IO[Any]]:
    """Checked writes straight into an existing device or pipe (/dev/null, /dev/stdout, a FIFO)."""
    try:
        fh = open(path, mode, **({} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}))
    except OSError as exc:
        raise write_error(path, exc) from None
    checked = CheckedFile(path, fh)
    with checked:
        yield checked  # type: ignore[misc]
        checked.flush()


def atomic_write(path: Union[str, os.PathLike], data: Union[bytes, bytearray, memoryview, str]) -> None:
    """Replace `path` by `data` (bytes, or str written as UTF-8), atomically (see `atomic_open`)."""
    if isinstance(data, str):
        with atomic_open(path, "w") as fh:
            fh.write(data)
    else:
        with atomic_open(path, "wb") as fh:
            fh.write(data)


def atomic_write_buffered(path: Union[str, os.PathLike], serialise: Callable[[IO[bytes]], Any]) -> None:
    """`serialise(buffer)` into memory, then `atomic_write` the bytes: for writers that must not see
    the file system themselves (torch.save, torch.jit.save: a failed write inside their C++ writer
    aborts the process or leaves a partial file)."""
    buf = io.BytesIO()
    serialise(buf)
    atomic_write(path, buf.getbuffer())


class CheckedFile:
    """An open file whose write/flush/close failures are `WriteError`s naming it (for appended logs,
    which cannot be replaced atomically: each row is flushed whole or the run stops with one line)."""

    def __init__(self, path: str, fh: IO[Any]) -> None:
        self.path = path
        self._fh = fh

    def write(self, data: Any) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def close(self) -> None:
        if self._fh.closed:
            return
        try:
            self._fh.close()
        except OSError as exc:
            raise write_error(self.path, exc) from None

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def __getattr__(self, name: str) -> Any:  # name, mode, fileno, ... of the file
        return getattr(self._fh, name)

    def __enter__(self) -> "CheckedFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:  # already failing: close without masking the first error
            with contextlib.suppress(OSError):
                self._fh.close()


def open_append(path: Union[str, os.PathLike], newline: Optional[str] = None) -> CheckedFile:
    """Open a text log for appending (created if missing), with checked writes."""
    path = os.fspath(path)
    _check_target(path)
    try:
        fh = open(path, "a", encoding="utf-8", newline=newline)
    except OSError as exc:
        raise write_error(path, exc) from None
    return CheckedFile(path, fh)

