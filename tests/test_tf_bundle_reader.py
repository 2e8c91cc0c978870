"""The tensor-bundle reader against checkpoints written by TensorFlow itself: every dtype the
reader supports, strings, data split over several shards, and damaged files refused by their
checksums (TensorFlow is a test-only dependency; the reader never imports it)."""

import os

import numpy as np
import pytest
import torch

from simclrv2.tf_import.bundle_reader import CheckpointFormatError, TensorBundle

torch_dynamo = pytest.importorskip("torch._dynamo")  # before TF: triton after TF segfaults
tf = pytest.importorskip("tensorflow")

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


def _values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.normal(size=(3, 4, 5)).astype(np.float32),
        "f64": rng.normal(size=7),
        "f16": rng.normal(size=(2, 3)).astype(np.float16),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u8": np.array([0, 1, 255], dtype=np.uint8),
        "i16": np.array([-300, 300], dtype=np.int16),
        "i32": np.arange(-3, 9, dtype=np.int32).reshape(3, 4),
        "i64": np.array([2**40, -(2**40)], dtype=np.int64),
        "flag": np.array([True, False, True]),
        "scalar": np.float32(2.5),
    }


@pytest.fixture(scope="module")
def dtype_checkpoint(tmp_path_factory) -> str:
    variables = {name: tf.Variable(value) for name, value in _values().items()}
    variables["bf16"] = tf.Variable(tf.constant([1.5, -2.25, 65280.0], dtype=tf.bfloat16))
    variables["words"] = tf.Variable([b"alpha", b"", b"\xff\x00 bytes"])
    prefix = str(tmp_path_factory.mktemp("dtypes") / "ckpt-1")
    return tf.train.Checkpoint(**variables).write(prefix)


def test_every_dtype_reads_back_exactly(dtype_checkpoint):
    bundle = TensorBundle(dtype_checkpoint)
    for name, expected in _values().items():
        tensor = bundle.read(f"{name}{VALUE_SUFFIX}")
        assert tensor.numpy().dtype == expected.dtype, name
        assert tensor.shape == expected.shape, name
        np.testing.assert_array_equal(tensor.numpy(), expected, err_msg=name)
    bf16 = bundle.read(f"bf16{VALUE_SUFFIX}")
    assert bf16.dtype == torch.bfloat16
    assert bf16.float().tolist() == [1.5, -2.25, 65280.0]
    assert bundle.read_strings(f"words{VALUE_SUFFIX}") == [b"alpha", b"", b"\xff\x00 bytes"]
    # The TF2 object graph is a string tensor too; it parses as a protobuf with 1+ nodes.
    (graph,) = bundle.read_strings("_CHECKPOINTABLE_OBJECT_GRAPH")
    assert graph.startswith(b"\n")  # field 1 (nodes), length-delimited


def test_data_split_over_shards_is_read_from_each(tmp_path):
    """Several data files, as TF1's sharded Saver writes them (one SaveV2 per device, then
    MergeV2Checkpoints into one index)."""
    rng = np.random.default_rng(1)
    values = {f"v{i}": rng.normal(size=(60, 50)).astype(np.float32) for i in range(4)}
    parts = []
    for part, names in enumerate((["v0", "v2"], ["v1"], ["v3"])):
        prefix = str(tmp_path / f"part-{part}")
        tf.raw_ops.SaveV2(
            prefix=prefix,
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=[tf.constant(values[name]) for name in names],
        )
        parts.append(prefix)
    prefix = str(tmp_path / "model.ckpt-7")
    tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=prefix)
    bundle = TensorBundle(prefix)
    assert bundle.num_shards == 3
    assert {bundle.entries[name].shard for name in values} == {0, 1, 2}
    for name, expected in values.items():
        np.testing.assert_array_equal(bundle.read(name).numpy(), expected)


def test_a_partitioned_tensor_is_refused_by_name(tmp_path):
    """TF2's MaxShardSizePolicy cuts big variables into slices; the released checkpoints do
    not, and this reader says so instead of returning a wrong tensor."""
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=2_000)
    prefix = tf.train.Checkpoint(
        small=tf.Variable([1.0, 2.0]), big=tf.Variable(np.ones((40, 40), np.float32))
    ).write(
        str(tmp_path / "ckpt-8"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=policy),
    )
    bundle = TensorBundle(prefix)
    assert bundle.read(f"small{VALUE_SUFFIX}").tolist() == [1.0, 2.0]
    with pytest.raises(CheckpointFormatError, match=r"'big/.*' is stored in slices"):
        bundle.read(f"big{VALUE_SUFFIX}")


def _flip_byte(path: str, position: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0x01]))


def test_a_corrupt_data_file_is_refused_naming_the_tensor(tmp_path):
    value = np.arange(1000, dtype=np.float32)
    prefix = tf.train.Checkpoint(weights=tf.Variable(value)).write(str(tmp_path / "ckpt-3"))
    bundle = TensorBundle(prefix)
    entry = bundle.entries[f"weights{VALUE_SUFFIX}"]
    _flip_byte(bundle.shard_path(entry.shard), entry.offset + 123)
    with pytest.raises(CheckpointFormatError, match=r"'weights/.*' .* fails its CRC-32C"):
        TensorBundle(prefix).read(f"weights{VALUE_SUFFIX}")


def test_a_corrupt_index_is_refused(tmp_path):
    prefix = tf.train.Checkpoint(weights=tf.Variable([1.0, 2.0])).write(str(tmp_path / "ckpt-4"))
    _flip_byte(f"{prefix}.index", 10)  # inside the first data block
    with pytest.raises(CheckpointFormatError, match="fails its CRC-32C checksum"):
        TensorBundle(prefix)


def test_missing_and_foreign_files_are_named(tmp_path):
    prefix = tf.train.Checkpoint(weights=tf.Variable([1.0])).write(str(tmp_path / "ckpt-5"))
    os.remove(f"{prefix}.data-00000-of-00001")
    with pytest.raises(FileNotFoundError, match=r"ckpt-5\.data-00000-of-00001 is missing"):
        TensorBundle(prefix)
    with pytest.raises(FileNotFoundError, match="no checkpoint index"):
        TensorBundle(str(tmp_path / "ckpt-6"))
    (tmp_path / "notes.index").write_bytes(b"not a table, just some text " * 4)
    with pytest.raises(CheckpointFormatError, match="not a TensorFlow checkpoint index"):
        TensorBundle(str(tmp_path / "notes"))
