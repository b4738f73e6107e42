"""The Keras-style API's machinery, under :mod:`rnnkernels.models`:

- :mod:`.trainer`: compile, fit, evaluate, predict (the ``Trainer`` mixin of ``Sequential``);
- :mod:`.data_adapter`: arrays and Keras-style datasets in, checked batches out;
- :mod:`.interrupts`: Ctrl-C deferred to the end of the current batch;
- :mod:`.saving`: the one-file model format (a zip of JSON and ``.npy``, no pickles);
- :mod:`.interop`: weights to and from PyTorch ``state_dict``\\ s.

Users import :mod:`rnnkernels.models`, :mod:`rnnkernels.layers` and the other
Keras-named modules; :mod:`.interop` is public too.
"""
