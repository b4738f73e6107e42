"""The kernel core's private machinery, under :mod:`rnnkernels.ops`.

Layering (imports run down this list, never up):

- the compiled modules (``_kernels``: every cell's forward and backward, the
  weights' packing and the GEMM; ``_layout``: the packed layout's rows;
  ``_threads``: the OpenMP build; sources in ``src/``) only compute;
  :mod:`.isa` says which build of ``_kernels`` runs; :mod:`.openmp` loads
  every one of them (and with the first, OpenMP's runtime, with a bounded
  idle spin);
- :mod:`.threads` (how many threads a call may use), :mod:`.memory` (aligned,
  recycled buffers), :mod:`.blas` (BLAS held to one thread), :mod:`.tuning`
  (tile widths and thread caps, from the shape and the machine only);
- :mod:`.plan` (the packed layout of a batch), :mod:`.weights` (weights
  permuted and packed into the kernels' tiles) and :mod:`.cells` (the cell
  table the Python layers iterate);
- :mod:`rnnkernels.ops` validates, plans, allocates and calls the compiled
  modules.  :mod:`.pair` runs two kernel calls at once, each on its share of
  the threads (a Bidirectional layer's two directions).

Nothing here is public API; ``rnnkernels.ops`` and ``rnnkernels.show_config``
are.
"""
