"""Files written so that nobody ever sees half of one: into a temporary file
beside the target, flushed to disk, then renamed onto it (``os.replace`` is
atomic).  An error or Ctrl-C on the way leaves the old file as it was and no
temporary file behind.  Every file the package writes goes through here."""
import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside ``path`` for the caller to write; when the
    block ends without an error the file goes onto ``path``, else it is removed."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_json(path, obj, indent=1, default=None):
    """``obj`` as JSON (no NaN or Infinity) to ``path``, atomically."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=indent, allow_nan=False, default=default)
            fh.write("\n")
