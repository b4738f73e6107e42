"""The one atomic writer every output goes through."""
import json
import os

import pytest

from rnnkernels._util.atomic import replacing, write_json


def test_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with replacing(target) as tmp:
        with open(tmp, "w") as fh:
            fh.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["out.txt"]


def test_write_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        write_json(target, {"a": float("nan")})
    assert json.loads(target.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["r.json"]


def test_new_files_get_the_usual_permissions_and_replaced_ones_keep_theirs(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "new.json"
    write_json(target, {})
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask
    os.chmod(target, 0o640)
    write_json(target, {"b": 2})
    assert os.stat(target).st_mode & 0o777 == 0o640
