"""Reading an input file a user names (a netlist, an ``.include``, a CSV dataset) without hanging or
exhausting memory: regular files only, a bounded number of bytes, never a blocking open.

A device (``/dev/zero``), a FIFO, a socket or a folder is refused *before* anything is read: the file
is opened with ``O_NONBLOCK`` (a FIFO without a writer does not block the open) and checked with
``fstat`` on the open descriptor (no race between the check and the read). A symbolic-link loop, a
missing file and a permission error are refused with a one-line reason.
"""
from __future__ import annotations

import errno
import os
import stat

from physgrad.types import PhysgradError


class InputFileError(PhysgradError):
    """A file that cannot be read as input; the message is the reason only (callers prefix the
    file name and the line that named it)."""


class TooLargeError(InputFileError):
    """A file over the byte limit it was read with."""


class MissingFileError(InputFileError):
    """A file that does not exist."""


def read_limited(path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Parameters
    ----------
    path : str or os.PathLike
    max_bytes : int
        Largest size read (bytes); a larger file is refused (the size is checked before reading
        and the read stops one byte past the limit, for files whose size ``stat`` does not know,
        such as those under ``/proc``).

    Raises
    ------
    InputFileError
        "no such file", "is a directory", "is not a regular file (a character device)", "is a
        symbolic-link loop", "permission denied", "is larger than ... bytes", or the OS reason.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MissingFileError("no such file") from None
    except PermissionError:
        raise InputFileError("permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputFileError("is a symbolic-link loop (too many levels of symbolic links)") from None
        if exc.errno == errno.EISDIR:
            raise InputFileError("is a directory, not a file") from None
        raise InputFileError(f"cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputFileError("is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(f"is not a regular file (it is a {_kind(st.st_mode)})")
        if st.st_size > max_bytes:
            raise TooLargeError(f"is larger than the limit of {max_bytes:,} bytes ({st.st_size:,} bytes)")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise TooLargeError(f"is larger than the limit of {max_bytes:,} bytes")
        return b"".join(chunks)
    except InputFileError:
        raise
    except OSError as exc:
        raise InputFileError(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def line_of(data: bytes, offset: int) -> int:
    """The 1-based line number of byte ``offset`` in ``data`` (lines end with ``\\n``, ``\\r\\n`` or ``\\r``)."""
    head = data[:offset]
    return head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1
