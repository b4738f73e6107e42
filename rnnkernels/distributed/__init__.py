"""Data-parallel training on MPI: ``mpiexec -n N python script.py`` runs fit on N ranks.

Nothing to change in a training script: launched by ``mpiexec`` (or ``mpirun``,
``srun``) with more than one rank, :meth:`Sequential.fit` trains each global
batch split over the ranks and gives every rank the one-process result (up to
the order of floating-point sums), bitwise the same on all of them.  The
global batch is ``batch_size``; each rank takes ``batch_size / N`` of it.
``with MPIStrategy(...).scope():`` sets the options, ``with OneProcess().scope():``
opts out.  Install with ``pip install 'rnnkernels[mpi]'`` (mpi4py and MPICH).
docs/distributed.md has the design, the exactness bound and the fault rules.

One module per concern: ``launch`` (was this process launched, how many ranks
on the node), ``comm`` (mpi4py, waits with deadlines), ``partition``
(which rows a rank trains on), ``gradients`` (bucketed nonblocking
all-reduce), ``state`` (broadcast and replica checks), ``watchdog`` (dead peers,
signals), ``strategy`` (the hooks fit calls).
"""
from .comm import DistributedError
from .launch import is_launched, launched_rank, launched_size
from .partition import LaunchError, part, rows
from .strategy import MPIStrategy, OneProcess, active, is_chief, rank, size

__all__ = ["MPIStrategy", "OneProcess", "active", "rank", "size", "is_chief", "is_launched",
           "launched_rank", "launched_size", "part", "rows", "DistributedError", "LaunchError"]
