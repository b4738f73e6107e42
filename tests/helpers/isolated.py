"""Hostile cases that could crash or hang the interpreter run in a child Python process,
under a timeout: a segfault or a hang then fails one test instead of the whole run."""
import subprocess
import sys
import textwrap

from .environment import package_env


class Result:
    def __init__(self, returncode, stdout, stderr, timed_out):
        self.returncode, self.stdout, self.stderr, self.timed_out = returncode, stdout, stderr, timed_out

    def __repr__(self):
        return (f"<exit {self.returncode}{' (timed out)' if self.timed_out else ''}; "
                f"stdout {self.stdout[-2000:]!r}; stderr {self.stderr[-2000:]!r}>")


def run_python(code, timeout=120, args=(), env=None, cwd=None):
    """Run ``code`` (dedented) in a fresh interpreter importing this rnnkernels; a
    :class:`Result` (``timed_out`` and ``returncode`` None when it ran past ``timeout``)."""
    environment = package_env(**(env or {}))
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=environment, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        return Result(None, text(exc.stdout), text(exc.stderr), True)
    return Result(proc.returncode, proc.stdout, proc.stderr, False)


def run_cli(argv, timeout=300, env=None, cwd=None):
    """``python -m rnnkernels ARGV`` in a child process; a :class:`Result`."""
    environment = package_env(**(env or {}))
    try:
        proc = subprocess.run([sys.executable, "-m", "rnnkernels", *map(str, argv)], capture_output=True,
                              text=True, timeout=timeout, env=environment, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        return Result(None, str(exc.stdout or ""), str(exc.stderr or ""), True)
    return Result(proc.returncode, proc.stdout, proc.stderr, False)


def one_error_line(result, status=1):
    """The command ended with ``status`` and exactly one stderr line, no traceback."""
    assert not result.timed_out, result
    assert result.returncode == status, result
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result
    return lines[0]
