"""Writing files: a crash at any moment leaves the old file or the new one, never half of one.

Every file the package writes (checkpoints, weights, exports, tables, figures) goes through
:func:`atomic_write`. A write that fails for lack of space or any other I/O error raises
:class:`WriteError`, which names the file and says that the previous version was kept.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

# How PyTorch's zip writer reports a failed write (torch.save raises RuntimeError, not OSError).
_TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


class WriteError(OSError):
    """A file could not be written; the destination was left as it was."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, fsync the result, then rename it over ``path``.

    The temporary file lives in the destination folder (same file system, so the
    rename is atomic) and is removed if ``write`` fails.

    Raises:
        WriteError: The file system refused the write (full disk, quota, file size
            limit...); ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _is_write_failure(e):
            raise WriteError(_write_failure_message(path, e)) from e
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _is_write_failure(e: BaseException) -> bool:
    if isinstance(e, WriteError):
        return False  # already explained (a nested atomic write)
    if isinstance(e, OSError):
        return True
    return isinstance(e, RuntimeError) and any(s in str(e) for s in _TORCH_WRITE_FAILURES)


def _write_failure_message(path: Path, e: BaseException) -> str:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed"
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MB free there"
    except OSError:
        free = "free space unknown"
    kept = "the previous file is kept unchanged" if path.exists() else "nothing was written"
    return f"could not write {str(path)!r}: {reason} ({free}); {kept}. Free some space or choose another folder."


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def csv_text(rows: Sequence[dict]) -> str:
    """``rows`` as CSV text, the first row's keys as the header (empty for no rows)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write ``rows`` to ``path`` as CSV, atomically."""
    return write_text(path, csv_text(rows))
