"""Files written so that nobody ever sees half of one: into a temporary file
beside the target, flushed to disk, then renamed onto it (``os.replace`` is
atomic).  An error or Ctrl-C on the way leaves the old file as it was and no
temporary file behind.  Every file the package writes goes through here."""
import contextlib
import json
import os
import secrets
import shutil


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside ``path`` for the caller to write; when the
    block ends without an error the file goes onto ``path``, else it is removed."""
    path = os.fspath(path)
    tmp = _create_beside(path)
    try:
        if os.path.isfile(path):  # a replaced file keeps its permissions
            shutil.copymode(path, tmp)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_json(path, obj, indent=1):
    """``obj`` as JSON (no NaN or Infinity; NumPy scalars and arrays as numbers
    and lists) to ``path``, atomically."""
    with replacing(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=indent, allow_nan=False, default=_numpy_to_json)
            fh.write("\n")


def _numpy_to_json(value):
    if hasattr(value, "tolist") and type(value).__module__ == "numpy":  # np.generic, np.ndarray
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _create_beside(path):
    """An empty new file next to ``path``, created with the usual permissions
    (0o666 less the umask: tempfile.mkstemp would make it private)."""
    directory, name = os.path.split(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"path: no free temporary name beside {path!r}")
