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
import errno
import io
import json
import math
import os
import re
import zipfile

import numpy as np

from .._util.atomic import replacing
from .._util.files import open_regular

HEADER = "rnnkernels.json"
FORMAT_VERSION = 1

# The format's limits (docs/reliability.md, "Model files as untrusted data").  A file
# beyond them is refused with a ValueError before anything is allocated.
MAX_HEADER_BYTES = 16 << 20      # the JSON header (and audio.json)
MAX_JSON_DEPTH = 64              # nesting of objects and lists in a header
MAX_ENTRIES = 100_000            # archive entries
MAX_ENTRY_BYTES = 16 << 30       # what one entry may inflate to
MAX_ELEMENTS = 1 << 31           # values in all the arrays together (8 GiB of float32)
MAX_SIZE = 1 << 24               # any size the model config declares (units, features, steps)
MAX_LAYERS = 10_000


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


def read_archive(path, expected_format, check=None):
    """``(header, {group: [ndarray]})`` from ``path``; ValueError for anything invalid.

    Nothing is trusted: the file must be a regular file (a FIFO would block), the
    entries' declared sizes are checked against the file's real size and the limits
    above, the header is parsed with a bound on its size and nesting and refused with
    non-finite numbers, and every array's ``.npy`` header (shape, dtype) is read and
    checked against its entry's size before any array is allocated.  ``check(header,
    shapes)`` (``shapes``: ``{group: [shape tuple]}``) then runs, before any array
    data is read: the model loader compares the shapes with the layers' configs there.
    """
    path = os.fspath(path)
    fh = open_regular(path, "model file")  # FileNotFoundError / ValueError (FIFO, directory...)
    try:
        with fh, zipfile.ZipFile(fh) as zf:
            infos = _entries(zf, os.fstat(fh.fileno()).st_size)
            header = _read_header(zf, infos)
            _check_header(header, expected_format, infos)
            layout = {group: [_array_layout(zf, infos[_entry_name(group, i)])
                              for i in range(count)] for group, count in header["arrays"].items()}
            total = sum(math.prod(shape) for items in layout.values() for _, shape, _, _ in items)
            if total > MAX_ELEMENTS:
                raise _Invalid(f"its arrays hold {total:,} values in all, more than the limit of "
                               f"{MAX_ELEMENTS:,}")
            if check is not None:
                check(header, {group: [shape for _, shape, _, _ in items] for group, items in layout.items()})
            arrays = {group: [_read_array(zf, infos[_entry_name(group, i)], *item)
                              for i, item in enumerate(items)] for group, items in layout.items()}
    except _Invalid as e:
        raise ValueError(f"{path}: not a valid rnnkernels file: {e}") from None
    except ValueError as e:  # check()'s own findings name the file already
        if str(e).startswith(path):
            raise
        raise ValueError(f"{path}: not a valid rnnkernels file (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, KeyError, EOFError,
            UnicodeDecodeError, TypeError, AttributeError, OverflowError, RecursionError,
            OSError) as e:
        if (isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None
                and e.errno != errno.EINVAL):  # EINVAL: a seek to an offset the file made up
            raise  # the disk, not the file
        raise ValueError(f"{path}: not a valid rnnkernels file (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from None
    return header, arrays


def read_json_entry(path, name, limit=MAX_HEADER_BYTES):
    """One more JSON entry of an archive (``audio.json``), read with the header's rules
    (regular file, bounded size, finite numbers, bounded nesting); KeyError when absent,
    ValueError when invalid."""
    path = os.fspath(path)
    with open_regular(path, "model file") as fh:
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = _entries(zf, os.fstat(fh.fileno()).st_size)
                if name not in infos:
                    raise KeyError(name)
                return _parse_json(_read_bounded(zf, infos[name], limit), name)
        except _Invalid as e:
            raise ValueError(f"{path}: not a valid rnnkernels file: {e}") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError,
                UnicodeDecodeError, RecursionError, OSError) as e:
            if (isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None
                    and e.errno != errno.EINVAL):
                raise
            raise ValueError(f"{path}: not a valid rnnkernels file (truncated or corrupt?): "
                             f"{type(e).__name__}: {e}") from None


def _entry_name(group, i):
    return f"arrays/{group}/{i:04d}.npy"


def _entries(zf, file_size):
    """``{name: ZipInfo}``, once every entry's declared sizes are possible for a file of
    ``file_size`` bytes and within the limits (nothing is read yet)."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise _Invalid(f"{len(infos):,} entries, more than the limit of {MAX_ENTRIES:,}")
    out = {}
    for info in infos:
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Invalid(f"entry {info.filename!r} uses compression method {info.compress_type} "
                           "(only stored or deflated entries are read)")
        if info.header_offset < 0 or info.header_offset + info.compress_size > file_size:
            raise _Invalid(f"entry {info.filename!r} declares {info.compress_size:,} bytes at offset "
                           f"{info.header_offset:,}, beyond the file's {file_size:,} bytes (truncated?)")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise _Invalid(f"stored entry {info.filename!r} declares {info.file_size:,} bytes but "
                           f"holds {info.compress_size:,}")
        if info.file_size > MAX_ENTRY_BYTES:
            raise _Invalid(f"entry {info.filename!r} inflates to {info.file_size:,} bytes, more than "
                           f"the limit of {MAX_ENTRY_BYTES:,}")
        if info.filename in out:
            raise _Invalid(f"entry {info.filename!r} appears twice")
        out[info.filename] = info
    return out


def _read_bounded(zf, info, limit):
    """An entry's bytes, refused before reading when it declares more than ``limit``,
    and never more than it declares (a stream that runs on is corrupt)."""
    if info.file_size > limit:
        raise _Invalid(f"entry {info.filename!r} declares {info.file_size:,} bytes, more than the "
                       f"limit of {limit:,}")
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)  # reading to the end checks the CRC
    if len(data) != info.file_size:
        raise _Invalid(f"entry {info.filename!r} holds {len(data):,} bytes, its header declares "
                       f"{info.file_size:,}")
    return data


def _reject_constant(name):
    raise _Invalid(f"the header holds {name}; numbers must be finite")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise _Invalid(f"the header holds the number {text[:40]}, which is not finite in float64")
    return value


def _parse_json(data, name):
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise _Invalid(f"{name} is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise _Invalid(f"{name} is not valid JSON ({e})") from None
    except ValueError as e:  # an integer of more than 4,300 digits
        raise _Invalid(f"{name}: {e}") from None
    stack = [(value, 1)]
    while stack:  # nesting depth, without recursion
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise _Invalid(f"{name} is nested more than {MAX_JSON_DEPTH} levels deep")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return value


def _read_header(zf, infos):
    if HEADER not in infos:
        raise _Invalid(f"no {HEADER} entry")
    return _parse_json(_read_bounded(zf, infos[HEADER], MAX_HEADER_BYTES), "the header")


_GROUP = re.compile(r"(weights|states)/(0|[1-9][0-9]{0,5})|optimizer|states")


def _check_header(header, expected_format, infos):
    if not isinstance(header, dict) or header.get("format") not in ("rnnkernels.model", "rnnkernels.weights"):
        raise _Invalid("the header does not describe an rnnkernels model")
    version = header.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise _Invalid(f"format_version {version!r:.40} is not supported (this version reads {FORMAT_VERSION})")
    if expected_format == "rnnkernels.model" and header["format"] != expected_format:
        raise _Invalid("it holds weights only; use model.load_weights")
    groups = header.get("arrays")
    if not isinstance(groups, dict):
        raise _Invalid(f"the header's 'arrays' is {type(groups).__name__}, expected an object")
    for group, count in groups.items():
        if not _GROUP.fullmatch(group):
            raise _Invalid(f"unknown array group {group!r:.60}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_ENTRIES:
            raise _Invalid(f"array group {group!r} has count {count!r:.40}, expected an integer in "
                           f"[0, {MAX_ENTRIES}]")
        for i in range(count):
            if _entry_name(group, i) not in infos:
                raise _Invalid(f"no entry {_entry_name(group, i)!r} (the header lists {count} arrays "
                               f"in {group!r})")


_DTYPES = {np.dtype(t) for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                                  "uint8", "uint16", "uint32", "uint64", "bool")}


def _array_layout(zf, info):
    """``(dtype, shape, fortran_order, data offset)`` from an entry's ``.npy`` header, once
    the header's shape and dtype account for the entry's declared size exactly."""
    with zf.open(info) as f:
        prefix = f.read(min(info.file_size, 65536 + 10))
    buf = io.BytesIO(prefix)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"npy version {version}")
    except (ValueError, SyntaxError, TypeError, EOFError) as e:
        raise _Invalid(f"entry {info.filename!r} is not a valid .npy array ({' '.join(str(e).split())[:200]})") \
            from None
    if dtype not in _DTYPES or dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        raise _Invalid(f"entry {info.filename!r} has dtype {dtype.str!r}; expected a plain number type")
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise _Invalid(f"entry {info.filename!r} declares shape {shape} ({n:,} values), more than the "
                       f"limit of {MAX_ELEMENTS:,}")
    offset = buf.tell()
    if offset + n * dtype.itemsize != info.file_size:
        raise _Invalid(f"entry {info.filename!r} declares shape {shape} of {dtype.name} "
                       f"({n * dtype.itemsize:,} bytes) but holds {info.file_size - offset:,} bytes of data")
    return dtype, shape, fortran, offset


def _read_array(zf, info, dtype, shape, fortran, offset):
    """The array, read in pieces into its own buffer (no second copy of the data)."""
    out = np.empty(math.prod(shape), dtype)
    view = memoryview(out).cast("B")
    with zf.open(info) as f:
        if len(f.read(offset)) != offset:
            raise _Invalid(f"entry {info.filename!r} is truncated")
        done = 0
        while done < len(view):
            got = f.readinto(view[done:done + (1 << 22)])
            if not got:
                raise _Invalid(f"entry {info.filename!r} is truncated ({done:,} of {len(view):,} bytes)")
            done += got
        if f.read(1):  # and the end checks the CRC
            raise _Invalid(f"entry {info.filename!r} runs past its declared size")
    return out.reshape(shape, order="F" if fortran else "C")


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
    def check(header, shapes):  # before any array is read: the count and every shape
        n = sum(1 for g in shapes if g.startswith("weights/"))
        if n != len(model.layers) or any(f"weights/{i}" not in shapes for i in range(n)):
            raise ValueError(f"{path}: holds weights for {n} layers, the model has {len(model.layers)}")
        _check_shapes(model.layers, shapes, path)

    header, arrays = read_archive(path, "rnnkernels.weights", check)
    _check_layer_weights(model.layers, arrays, path)
    for i, layer in enumerate(model.layers):
        layer.set_weights(arrays[f"weights/{i}"])


def _check_shapes(layers, shapes, path):
    for i, layer in enumerate(layers):
        got = [tuple(s) for s in shapes.get(f"weights/{i}", [])]
        want = [tuple(s) for s in layer.weight_shapes()]
        if got != want:
            raise ValueError(f"{path}: weights of layer {i} ({layer.name}) have shapes {got}, the model "
                             f"expects {want}")


_SIZE_KEYS = ("units", "projection", "input_dim", "batch_size")
_SHAPE_KEYS = ("input_shape", "batch_input_shape")


def _check_sizes(config, where):
    """Every size a layer config declares (units, input dims, batch size, in nested
    configs too) is an integer in [1, MAX_SIZE] (None for an unknown shape entry)."""
    stack = [(config, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, list):
            stack.extend((v, at) for v in item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key in _SIZE_KEYS and value is not None and not (key == "projection" and value == 0):
                _check_size(f"{at}: {key}", value)
            elif key in _SHAPE_KEYS and value is not None:
                if not isinstance(value, list) or len(value) > 8:
                    raise ValueError(f"{at}: {key}: expected a list of at most 8 sizes, got {value!r:.80}")
                for d in value[1:] if key == "batch_input_shape" else value:
                    if d is not None:
                        _check_size(f"{at}: {key}", d)
            elif isinstance(value, (dict, list)):
                stack.append((value, at))


def _check_size(what, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise ValueError(f"{what}: expected an integer in [1, {MAX_SIZE:,}], got {value!r:.40}")


def _plan_model(header, shapes, path, model_class):
    """The model and its unbuilt layers from the header, once the header is consistent and
    every layer's weights in the file have the shapes its config gives (computed, not
    built: nothing the config declares is allocated before it matches the file)."""
    from .. import layers as layers_module
    spec = header.get("model")
    if not isinstance(spec, dict):
        raise ValueError(f"the header's 'model' is {type(spec).__name__}, expected an object")
    if spec.get("class_name") != model_class.__name__:
        raise ValueError(f"model class {spec.get('class_name')!r:.60} is not supported")
    config, specs, input_shapes = spec.get("config"), spec.get("layers"), spec.get("built_input_shapes")
    if not isinstance(config, dict):
        raise ValueError(f"the model's config is {type(config).__name__}, expected an object")
    if not isinstance(specs, list) or not isinstance(input_shapes, list):
        raise ValueError("the model's 'layers' and 'built_input_shapes' must be lists")
    if not 1 <= len(specs) <= MAX_LAYERS:
        raise ValueError(f"{len(specs)} layers; expected 1 to {MAX_LAYERS:,}")
    if len(input_shapes) != len(specs):
        raise ValueError(f"{len(specs)} layers but {len(input_shapes)} input shapes; the two lists "
                         "must have one entry per layer")
    groups = [g for g in shapes if g.startswith("weights/")]
    if sorted(groups) != sorted(f"weights/{i}" for i in range(len(specs))):
        raise ValueError(f"{len(specs)} layers but weights for {len(groups)} (groups "
                         f"{sorted(groups, key=lambda g: int(g.split('/')[1]))[:8]}); expected "
                         f"weights/0 to weights/{len(specs) - 1}")
    model = model_class(**config)
    layers, total, previous = [], 0, None
    for i, (layer_spec, shape) in enumerate(zip(specs, input_shapes)):
        _check_sizes(layer_spec, f"layer {i}")
        if shape is not None:
            if not isinstance(shape, list) or not 1 <= len(shape) <= 8:
                raise ValueError(f"layer {i}: input shape {shape!r:.80}; expected a list of 1 to 8 sizes")
            for d in shape:
                if d is not None:
                    _check_size(f"layer {i}: input shape", d)
            shape = tuple(shape)
        layer = layers_module.deserialize(layer_spec)
        # The shape the model will build the layer with (Sequential.add: the first layer's
        # declared input shape, then each previous layer's output shape) must be the saved one.
        built_with = layer.declared_input_shape if i == 0 else previous
        if built_with is not None and shape is not None and tuple(built_with) != shape:
            raise ValueError(f"layer {i} ({layer.name}): saved input shape {shape}, but it would be built "
                             f"for {tuple(built_with)}")
        shape = shape if shape is not None else built_with
        previous = None if shape is None else tuple(layer.compute_output_shape(shape))
        want = layer.expected_weight_shapes(shape) if shape is not None else None
        got = [tuple(s) for s in shapes[f"weights/{i}"]]
        if want is not None:
            want = [tuple(int(d) for d in w) for w in want]
            total += sum(math.prod(w) for w in want)
            if total > MAX_ELEMENTS:
                raise ValueError(f"layer {i} ({layer.name}): the config declares more than "
                                 f"{MAX_ELEMENTS:,} weights in all (the limit)")
            if got != want:
                raise ValueError(f"weights of layer {i} ({layer.name}) have shapes {got}, its config "
                                 f"(input shape {shape}) gives {want}")
        layers.append((layer, shape))
    for group in shapes:
        if group.startswith("states/"):
            i = int(group.split("/")[1])
            if i >= len(layers) or not getattr(layers[i][0], "stateful", False):
                raise ValueError(f"states for layer {i}, which is not a stateful layer of the model")
    return model, layers


def _count(training, key):
    value = training.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 62:
        raise ValueError(f"training: {key}: expected a non-negative integer, got {value!r:.40}")
    return value


def load_model(path, model_class):
    """A ``model_class`` (Sequential) rebuilt from the file at ``path``."""
    planned = {}

    def check(header, shapes):
        try:
            planned["model"] = _plan_model(header, shapes, path, model_class)
        except ValueError as e:
            raise ValueError(f"{path}: not a valid rnnkernels model: {e}") from None
        except (KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError) as e:
            raise ValueError(f"{path}: not a valid rnnkernels model: {type(e).__name__}: {e}") from None

    header, arrays = read_archive(path, "rnnkernels.model", check)
    model, layers = planned["model"]
    try:
        for layer, shape in layers:
            model.add(layer)
            if not layer.built and shape is not None:
                model._build_layer(layer, shape)
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
        if legacy:
            raise ValueError(f"{len(legacy)} saved states left over after the stateful layers took theirs")
        compiled = header.get("compile")
        training = header.get("training", {})
        if not isinstance(training, dict):
            raise ValueError(f"the header's 'training' is {type(training).__name__}, expected an object")
        if compiled:
            if not isinstance(compiled, dict):
                raise ValueError(f"the header's 'compile' is {type(compiled).__name__}, expected an object")
            model.compile(optimizer=compiled["optimizer"], loss=compiled["loss"],
                          metrics=compiled["metrics"],
                          weighted_metrics=compiled.get("weighted_metrics"))
            model.optimizer.set_state(_count(training, "optimizer_iterations"), arrays.get("optimizer", []),
                                      model.trainable_params())
        elif "optimizer" in arrays:
            raise ValueError("optimizer state without compile settings")
        model.epochs_trained = _count(training, "epochs_trained")
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a valid rnnkernels model: {e}") from None
    except (KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError) as e:
        raise ValueError(f"{path}: not a valid rnnkernels model: {type(e).__name__}: {e}") from None
    return model
