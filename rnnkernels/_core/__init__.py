"""The kernel core's private machinery, under :mod:`rnnkernels.ops`.

Layering (imports run down this list, never up):

- the compiled modules (``_lstm``, ``_gru``, ``_rnn``, ``_layout``, ``_gemm``,
  ``_threads``; sources in ``src/``) only compute: typed memoryviews at the
  boundary, raw pointers inside ``nogil`` OpenMP regions;
- :mod:`.threads` (how many threads a call may use), :mod:`.memory` (aligned,
  recycled buffers), :mod:`.blas` (BLAS held to one thread), :mod:`.tuning`
  (tile widths and thread caps, from the shape and the machine only);
- :mod:`.plan` (the packed layout of a batch) and :mod:`.weights` (weights
  permuted and packed into the kernels' tiles);
- :mod:`rnnkernels.ops` validates, plans, allocates and calls the compiled
  modules.  :mod:`.pair` runs two kernel calls at once, each on its share of
  the threads (a Bidirectional layer's two directions).

Nothing here is public API; ``rnnkernels.ops`` and ``rnnkernels.show_config``
are.
"""
