"""Whether this process was started by an MPI launcher, read from the
environment (so nothing imports mpi4py, or starts MPI, in a plain run).

``mpiexec``/``mpirun`` of MPICH (Hydra: ``PMI_RANK``/``PMI_SIZE``), Open MPI
(``OMPI_COMM_WORLD_*``), PMIx launchers (``PMIX_RANK`` with a size),
MVAPICH (``MV2_COMM_WORLD_*``) and Slurm's ``srun --mpi`` (``PMI_*`` or
``PMIX_*``) all say the process's rank and the job's size there, and most
the ranks on this node, which sets the default thread count.
"""
import os

_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_UNIVERSE_SIZE")
_RANK = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK", "PMIX_RANK")
_LOCAL_SIZE = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_LOCAL_SIZE",
               "PMIX_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")


def _first_int(names, env):
    for name in names:
        value = env.get(name, "").split("(")[0].strip()
        if value.isdigit():
            return int(value)
    return None


def launched_size(env=None):
    """The number of ranks the launcher started (1 when not launched by one)."""
    env = os.environ if env is None else env
    n = _first_int(_SIZE, env)
    return n if n and n > 0 else 1


def launched_rank(env=None):
    env = os.environ if env is None else env
    r = _first_int(_RANK, env)
    return r if r is not None else 0


def local_size(env=None):
    """Ranks on this node as the launcher says, or None when it does not."""
    env = os.environ if env is None else env
    n = _first_int(_LOCAL_SIZE, env)
    return n if n and n > 0 else None


def is_launched(env=None):
    """Whether an MPI launcher started more than one rank (the case fit trains in parallel)."""
    return launched_size(env) > 1


def usable_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(ranks_on_node):
    """Kernel threads per rank when neither ``OMP_NUM_THREADS`` nor ``--threads`` says:
    the node's usable cores shared by its ranks (at least one)."""
    return max(1, usable_cores() // max(1, int(ranks_on_node)))
