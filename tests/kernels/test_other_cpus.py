"""The one portable build on CPUs older than this one, emulated by qemu-user
(Debian's qemu-user; skipped where it is not installed, run in CI): each
loads the widest kernel build it runs and computes the reference's numbers,
and a build it lacks is a clear error, never SIGILL.

OPENBLAS_CORETYPE is set to the emulated CPU because NumPy's OpenBLAS reads
qemu's CPUID as a newer core than qemu emulates and dies of SIGILL in its
own import-time check; our CPUID reading needs no such help."""
import os
import platform
import shutil
import subprocess
import sys

import pytest

from helpers.environment import package_env

QEMU = shutil.which("qemu-x86_64")
PROBE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers", "isa_probe.py")

pytestmark = [
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only"),
    pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (apt-get install qemu-user)"),
]


def _emulated(cpu_model, **env):
    environment = package_env(OPENBLAS_CORETYPE=cpu_model, RNNKERNELS_PLAN="default", **env)
    if "RNNKERNELS_ISA" not in env:
        environment.pop("RNNKERNELS_ISA", None)  # the build is the emulated CPU's choice
    return subprocess.run([QEMU, "-cpu", cpu_model, sys.executable, PROBE], env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("cpu_model, level, build", [("Haswell", 3, "avx2"), ("SandyBridge", 2, "baseline"),
                                                     ("Nehalem", 2, "baseline")])
def test_an_older_cpu_runs_its_widest_build(cpu_model, level, build):
    proc = _emulated(cpu_model)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got_level, active, available, err = proc.stdout.split()
    assert (int(got_level), active) == (level, build)
    assert "avx512" not in available.split(",")
    assert float(err) < 1e-12


def test_forcing_a_build_the_cpu_lacks_is_an_error_not_sigill():
    proc = _emulated("Haswell", RNNKERNELS_ISA="avx512")
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "RNNKERNELS_ISA='avx512'" in proc.stderr and "lacks x86-64-v4" in proc.stderr
