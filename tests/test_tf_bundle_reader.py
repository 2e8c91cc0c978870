"""The tensor-bundle reader against checkpoints written by TensorFlow itself (in a child
process, tests/tf_checkpoints.py): every dtype the reader supports, strings, data split over
several shards, and damaged files refused by their checksums. The reader never imports TF."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from simclrv2.tf_import.bundle_reader import CheckpointFormatError, TensorBundle
from tests.tf_checkpoints import dtype_values, shard_values, write_case

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_case("bundle", tmp_path_factory.mktemp("tf-bundles"))


def test_every_dtype_reads_back_exactly(written):
    bundle = TensorBundle(str(written / "dtypes" / "ckpt-1"))
    for name, expected in dtype_values().items():
        tensor = bundle.read(f"{name}{VALUE_SUFFIX}")
        assert tensor.numpy().dtype == expected.dtype, name
        assert tensor.shape == expected.shape, name
        np.testing.assert_array_equal(tensor.numpy(), expected, err_msg=name)
    bf16 = bundle.read(f"bf16{VALUE_SUFFIX}")
    assert bf16.dtype == torch.bfloat16
    assert bf16.float().tolist() == [1.5, -2.25, 65280.0]
    assert bundle.read_strings(f"words{VALUE_SUFFIX}") == [b"alpha", b"", b"\xff\x00 bytes"]
    # The TF2 object graph is a string tensor too: a protobuf whose field 1 holds the nodes.
    (graph,) = bundle.read_strings("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert graph.startswith(b"\n")


def test_data_split_over_shards_is_read_from_each(written):
    bundle = TensorBundle(str(written / "merged" / "model.ckpt-7"))
    values = shard_values()
    assert bundle.num_shards == 3
    assert {bundle.entries[name].shard for name in values} == {0, 1, 2}
    for name, expected in values.items():
        np.testing.assert_array_equal(bundle.read(name).numpy(), expected)


def test_a_partitioned_tensor_is_refused_by_name(written):
    """The released checkpoints have no sliced variables; the reader says so instead of
    returning a wrong tensor."""
    bundle = TensorBundle(str(written / "partitioned" / "ckpt-8"))
    assert bundle.read(f"small{VALUE_SUFFIX}").tolist() == [1.0, 2.0]
    with pytest.raises(CheckpointFormatError, match=r"'big/.*' is stored in slices"):
        bundle.read(f"big{VALUE_SUFFIX}")


def _flip_byte(path, position: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0x01]))


def _copy(written, case, tmp_path) -> str:
    shutil.copytree(written / case, tmp_path / case)
    return str(tmp_path / case / "ckpt-3")


def test_a_corrupt_data_file_is_refused_naming_the_tensor(written, tmp_path):
    prefix = _copy(written, "corrupt-data", tmp_path)
    key = f"weights{VALUE_SUFFIX}"
    assert TensorBundle(prefix).read(key).tolist() == list(range(1000))
    entry = TensorBundle(prefix).entries[key]
    _flip_byte(TensorBundle(prefix).shard_path(entry.shard), entry.offset + 123)
    with pytest.raises(CheckpointFormatError, match=r"'weights/.*' .* fails its CRC-32C"):
        TensorBundle(prefix).read(key)


def test_a_corrupt_index_is_refused(written, tmp_path):
    prefix = _copy(written, "corrupt-index", tmp_path)
    _flip_byte(f"{prefix}.index", 10)  # inside the first data block
    with pytest.raises(CheckpointFormatError, match="fails its CRC-32C checksum"):
        TensorBundle(prefix)


def test_missing_and_foreign_files_are_named(written, tmp_path):
    prefix = _copy(written, "missing-data", tmp_path)
    os.remove(f"{prefix}.data-00000-of-00001")
    with pytest.raises(FileNotFoundError, match=r"ckpt-3\.data-00000-of-00001 is missing"):
        TensorBundle(prefix)
    with pytest.raises(FileNotFoundError, match="no checkpoint index"):
        TensorBundle(str(tmp_path / "ckpt-6"))
    (tmp_path / "notes.index").write_bytes(b"not a table, just some text " * 4)
    with pytest.raises(CheckpointFormatError, match="not a TensorFlow checkpoint index"):
        TensorBundle(str(tmp_path / "notes"))


def test_reading_and_importing_need_no_tensorflow(written):
    """In a Python where `import tensorflow` fails, the reader and the importer still work."""
    script = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import simclrv2.cli.import_tf, simclrv2.tf_import.import_to_artifact\n"
        "from simclrv2.tf_import.bundle_reader import TensorBundle\n"
        f"bundle = TensorBundle({str(written / 'merged' / 'model.ckpt-7')!r})\n"
        "print(sorted(bundle.names()), float(bundle.read('v3').sum()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    total = float(shard_values()["v3"].sum())
    assert done.stdout.split("]")[0] == "['v0', 'v1', 'v2', 'v3'"
    assert abs(float(done.stdout.split()[-1]) - total) < 1e-3
