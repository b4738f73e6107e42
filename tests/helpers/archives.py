"""Hostile model files made from a real one: the archive rewritten with a changed header,
replaced or dropped entries (CRCs stay valid, so the loader's own checks are what is tested)."""
import io
import json
import zipfile

import numpy as np


def entries(path):
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def header(path):
    return json.loads(entries(path)["rnnkernels.json"])


def rewrite(src, dst, change_header=None, header_text=None, replace=None, drop=(), deflate=()):
    """Copy the archive ``src`` to ``dst``: ``change_header(header)`` edits the JSON header in
    place (or ``header_text`` replaces it verbatim), ``replace`` maps entry names to new bytes,
    ``drop`` lists entries to leave out, ``deflate`` entries to compress."""
    items = entries(src)
    if change_header is not None:
        h = json.loads(items["rnnkernels.json"])
        change_header(h)
        items["rnnkernels.json"] = json.dumps(h).encode()
    if header_text is not None:
        items["rnnkernels.json"] = header_text.encode() if isinstance(header_text, str) else header_text
    items.update(replace or {})
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in items.items():
            if name not in drop:
                zf.writestr(name, data, zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)
    return dst


def npy_bytes(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_claiming(shape, dtype="<f4", data=b""):
    """A .npy entry whose header declares ``shape`` followed by only ``data``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + data
