"""Saved-model file format: a zip archive, portable and free of pickles.

Entries:

- ``rnnkernels.json``: UTF-8 JSON header, ``{"format": "rnnkernels.model" or
  "rnnkernels.weights", "format_version": 1, "model": {...layer configs...},
  "compile": {...} or null, "training": {...}, "arrays": {group: [entry names]}}``.
- ``arrays/<group>/<index>.npy``: NumPy ``.npy`` arrays (read with
  ``allow_pickle=False``); group ``weights/<layer index>`` holds a layer's
  weights in Keras layout, ``optimizer`` the optimizer's slots.

Files are written to a temporary file in the target directory, fsynced and
renamed over the target (``os.replace``), so a crash never leaves a partial
file under the target name.  Reading checks every entry (zip CRCs, JSON,
array headers, shapes) and raises ``ValueError`` naming the file before any
model is changed or returned.
"""
import io
import json
import os
import zipfile

import numpy as np

from .._util.atomic import replacing

HEADER = "rnnkernels.json"
FORMAT_VERSION = 1


class _Invalid(Exception):
    """Internal: reason a file is not a valid archive."""


def write_archive(path, header, arrays):
    """Write ``header`` (JSON-able dict) and ``arrays`` ({group: [ndarray]}) to ``path`` atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"path: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"path: {path!r} is a directory; expected a file name")
    header = dict(header, format_version=FORMAT_VERSION,
                  arrays={group: len(items) for group, items in arrays.items()})
    with replacing(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(HEADER, json.dumps(header, indent=1, sort_keys=True))
            for group, items in arrays.items():
                for i, a in enumerate(items):
                    buf = io.BytesIO()
                    np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
                    zf.writestr(f"arrays/{group}/{i:04d}.npy", buf.getvalue())


def read_archive(path, expected_format):
    """``(header, {group: [ndarray]})`` from ``path``; ValueError for anything invalid."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no such file: {path!r}")
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                header = json.loads(zf.read(HEADER).decode("utf-8"))
            except KeyError:
                raise _Invalid(f"no {HEADER} entry") from None
            if not isinstance(header, dict) or header.get("format") not in (
                    "rnnkernels.model", "rnnkernels.weights"):
                raise _Invalid("the header does not describe an rnnkernels model")
            if header.get("format_version") != FORMAT_VERSION:
                raise _Invalid(f"format_version {header.get('format_version')!r} is not supported "
                               f"(this version reads {FORMAT_VERSION})")
            if expected_format == "rnnkernels.model" and header["format"] != expected_format:
                raise _Invalid("it holds weights only; use model.load_weights")
            arrays = {}
            for group, count in header["arrays"].items():
                items = []
                for i in range(int(count)):
                    with zf.open(f"arrays/{group}/{i:04d}.npy") as f:
                        data = f.read()  # reading to the end checks the CRC
                    items.append(np.lib.format.read_array(io.BytesIO(data), allow_pickle=False))
                arrays[group] = items
    except _Invalid as e:
        raise ValueError(f"{path}: not a valid rnnkernels file: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, EOFError, UnicodeDecodeError,
            json.JSONDecodeError, ValueError, TypeError, AttributeError, OSError) as e:
        if isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None:
            raise
        raise ValueError(f"{path}: not a valid rnnkernels file (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None
    return header, arrays



def model_header(model, fmt, include_optimizer):
    from .. import layers as layers_module
    from .. import losses, metrics, optimizers
    header = {"format": fmt,
              "model": {"class_name": type(model).__name__, "config": model.get_config(),
                        "layers": [layers_module.serialize(layer) for layer in model.layers],
                        "built_input_shapes": [None if l.input_shape is None else list(l.input_shape)
                                               for l in model.layers]}}
    if include_optimizer and model.optimizer is not None:
        header["compile"] = {"optimizer": optimizers.serialize(model.optimizer),
                             "loss": losses.serialize(model.loss),
                             "metrics": [metrics.serialize(m) for m in model._metric_specs],
                             "weighted_metrics": [metrics.serialize(m, "weighted_metrics")
                                                  for m in model._weighted_specs]}
        header["training"] = {"optimizer_iterations": model.optimizer.iterations,
                              "epochs_trained": model.epochs_trained}
    else:
        header["compile"] = None
        header["training"] = {"epochs_trained": model.epochs_trained}
    return header


def model_arrays(model, include_optimizer):
    arrays = {f"weights/{i}": layer.get_weights() for i, layer in enumerate(model.layers)}
    # Keyed by layer: a stateful layer that never ran has no states, and a flat
    # list would hand the next layer's states to it.
    for i, layer in enumerate(model.layers):
        if getattr(layer, "states", None):
            arrays[f"states/{i}"] = list(layer.states)
    if include_optimizer and model.optimizer is not None:
        arrays["optimizer"] = model.optimizer.get_state()[1]
    return arrays


def save_model(model, path, include_optimizer=True):
    if not all(layer.built for layer in model.layers) or not model.layers:
        raise ValueError("model: build the model (give input_shape= or fit it) before saving")
    write_archive(path, model_header(model, "rnnkernels.model", include_optimizer),
                  model_arrays(model, include_optimizer))


def save_weights(model, path):
    if not all(layer.built for layer in model.layers) or not model.layers:
        raise ValueError("model: build the model before saving its weights")
    header = {"format": "rnnkernels.weights",
              "layers": [[type(l).__name__, l.name] for l in model.layers]}
    write_archive(path, header, {f"weights/{i}": l.get_weights() for i, l in enumerate(model.layers)})


def _check_layer_weights(layers, arrays, path):
    for i, layer in enumerate(layers):
        got = arrays.get(f"weights/{i}")
        want = layer.weight_shapes()
        if got is None or [a.shape for a in got] != [tuple(s) for s in want]:
            raise ValueError(f"{path}: weights of layer {i} ({layer.name}) have shapes "
                             f"{None if got is None else [a.shape for a in got]}, the model expects {want}")


def load_weights(model, path):
    header, arrays = read_archive(path, "rnnkernels.weights")
    n = sum(1 for g in arrays if g.startswith("weights/"))
    if n != len(model.layers):
        raise ValueError(f"{path}: holds weights for {n} layers, the model has {len(model.layers)}")
    _check_layer_weights(model.layers, arrays, path)
    for i, layer in enumerate(model.layers):
        layer.set_weights(arrays[f"weights/{i}"])


def load_model(path, model_class):
    """A ``model_class`` (Sequential) rebuilt from the file at ``path``."""
    from .. import layers as layers_module
    header, arrays = read_archive(path, "rnnkernels.model")
    try:
        spec = header["model"]
        if spec.get("class_name") != model_class.__name__:
            raise ValueError(f"model class {spec.get('class_name')!r} is not supported")
        model = model_class(**spec["config"])
        for layer_spec, shape in zip(spec["layers"], spec["built_input_shapes"]):
            layer = layers_module.deserialize(layer_spec)
            model.add(layer)
            if not layer.built and shape is not None:
                model._build_layer(layer, tuple(shape))
        _check_layer_weights(model.layers, arrays, path)
        for i, layer in enumerate(model.layers):
            layer.set_weights(arrays[f"weights/{i}"])
        legacy = list(arrays.get("states", []))  # one flat list, before per-layer groups
        for i, layer in enumerate(model.layers):
            if not getattr(layer, "stateful", False):
                continue
            if f"states/{i}" in arrays:
                layer.reset_states(arrays[f"states/{i}"])
            elif legacy:
                layer.reset_states(legacy[:layer.n_states])
                legacy = legacy[layer.n_states:]
        compiled = header.get("compile")
        training = header.get("training", {})
        if compiled:
            model.compile(optimizer=compiled["optimizer"], loss=compiled["loss"],
                          metrics=compiled["metrics"],
                          weighted_metrics=compiled.get("weighted_metrics"))
            model.optimizer.set_state(training.get("optimizer_iterations", 0), arrays.get("optimizer", []),
                                      model.trainable_params())
        model.epochs_trained = int(training.get("epochs_trained", 0))
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a valid rnnkernels model: {e}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: not a valid rnnkernels model: {type(e).__name__}: {e}") from None
    return model
