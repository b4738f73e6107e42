"""Reading files a user names, which may not be what they claim to be.

A named pipe (FIFO), a character device or a socket given as a model or audio
file would block the reader forever (a FIFO's ``open`` waits for a writer) or
feed it without end.  :func:`open_regular` opens with ``O_NONBLOCK`` (which
never waits) and refuses anything that is not a regular file before reading a
byte; :func:`check_regular_file` is the same check for readers that open the
path themselves (soundfile).
"""
import os
import stat

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _kind(mode):
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path, what="file"):
    """``path`` names a regular file (symbolic links followed): FileNotFoundError when
    nothing is there, ValueError naming ``what`` and the kind of file otherwise."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path!r}: no such file") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path!r}: is {_kind(st.st_mode)}, expected a regular file")
    return st


def open_regular(path, what="file"):
    """``path`` opened for binary reading, once it is known to be a regular file (checked
    on the opened descriptor, so nothing can be swapped in between); errors as
    :func:`check_regular_file`."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path!r}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path!r}: is a directory, expected a regular file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{what} {path!r}: is {_kind(st.st_mode)}, expected a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
