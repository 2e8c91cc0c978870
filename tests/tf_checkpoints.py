"""Checkpoints written by TensorFlow for the import tests, in a child process.

The test process never imports TensorFlow: its thread pools would be inherited by the
suite's later forks, and importing triton (torch.compile) after it crashes. Each test module
asks for one case; `write_case` runs `python -m tests.tf_checkpoints CASE FOLDER`, which
writes the checkpoints and, as .npz files, what TensorFlow computed from them.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGE_SIZE = 70  # stages see 35, 18, 9, 5 px: odd and even sizes for every padding rule
GREY_RELEASE = {"depth": 18, "width": 0.125, "cifar_stem": True, "in_channels": 1, "seed": 21}


def write_case(case: str, folder: Path) -> Path:
    """Run the case in a child Python with TensorFlow; skip when TF is not installed."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow (the tf-test extra, installed by `make test`) is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.tf_checkpoints", case, str(folder)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def dtype_values() -> dict[str, np.ndarray]:
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


def shard_values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {f"v{i}": rng.normal(size=(60, 50)).astype(np.float32) for i in range(4)}


def sample_images(channels: int = 3, size: int = IMAGE_SIZE) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 1, (2, channels, size, size)).astype("f4")


# --- what the child process runs (TensorFlow imported here only) ----------------------------


def _bundle(out: Path) -> None:
    import tensorflow as tf

    variables = {name: tf.Variable(value) for name, value in dtype_values().items()}
    variables["bf16"] = tf.Variable(tf.constant([1.5, -2.25, 65280.0], dtype=tf.bfloat16))
    variables["words"] = tf.Variable([b"alpha", b"", b"\xff\x00 bytes"])
    tf.train.Checkpoint(**variables).write(str(out / "dtypes" / "ckpt-1"))

    # Several data files, as TF1's sharded Saver writes them: one SaveV2 per device, then
    # MergeV2Checkpoints into one index.
    values = shard_values()
    parts = []
    for part, names in enumerate((["v0", "v2"], ["v1"], ["v3"])):
        prefix = str(out / "parts" / f"part-{part}")
        tf.raw_ops.SaveV2(
            prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
            tensors=[tf.constant(values[name]) for name in names],
        )  # fmt: skip
        parts.append(prefix)
    tf.raw_ops.MergeV2Checkpoints(
        checkpoint_prefixes=parts, destination_prefix=str(out / "merged" / "model.ckpt-7")
    )
    # TF2's MaxShardSizePolicy cuts big variables into slices.
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=2_000)
    tf.train.Checkpoint(
        small=tf.Variable([1.0, 2.0]), big=tf.Variable(np.ones((40, 40), np.float32))
    ).write(
        str(out / "partitioned" / "ckpt-8"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=policy),
    )
    for name in ("corrupt-data", "corrupt-index", "missing-data"):
        weights = tf.Variable(np.arange(1000, dtype=np.float32))
        tf.train.Checkpoint(weights=weights).write(str(out / name / "ckpt-3"))


def _r50(out: Path) -> None:
    from tests.tf_official_reference import OfficialModel, write_tf1

    images = sample_images()
    for sk in (False, True):
        folder = out / f"r50_1x_sk{int(sk)}"
        model = OfficialModel(depth=50, width=1, sk=sk, num_classes=10, seed=3 if sk else 4)
        model.write_tf2(str(folder / "tf2" / "ckpt-1"))
        variables = model.tf1_variables(ema_offset=0.5)
        write_tf1(str(folder / "tf1" / "model.ckpt-250228"), variables)
        np.savez(folder / "outputs.npz", images=images, **model.outputs(images, 1))
        np.savez(
            folder / "variables.npz",
            stem_kernel=variables["base_model/conv2d/kernel"].numpy(),
            stem_mean=variables["base_model/batch_normalization/moving_mean"].numpy(),
        )


def _r18(out: Path) -> None:
    import tensorflow as tf

    from tests.tf_official_reference import OfficialModel, write_tf1

    model = OfficialModel(depth=18, width=1, sk=False, num_classes=None, seed=5)
    variables = model.tf1_variables(ema_offset=None)
    write_tf1(str(out / "good" / "model.ckpt-1"), variables)
    # The official TF2 export (tf2/run.py build_saved_model): a module holding the model and
    # a list of its trainable variables, which the SavedModel reaches first (shorter paths).
    export = tf.Module()
    export.model = model
    export.trainable_variables_list = list(model.trainable_variables)
    tf.saved_model.save(export, str(out / "r18_1x_sk0" / "saved_model"))
    images = sample_images()
    np.savez(out / "outputs.npz", images=images, **model.outputs(images))
    extra = {**variables, "base_model/attention/query/kernel": tf.zeros([4, 4])}
    write_tf1(str(out / "extra" / "model.ckpt-1"), extra)
    for case, name in (("head", "head_contrastive/nl_0/dense/kernel"),
                       ("encoder", "base_model/conv2d_5/kernel")):  # fmt: skip
        wrong = {**variables, name: tf.zeros([*variables[name].shape[:-1], 3])}
        write_tf1(str(out / f"wrong-{case}" / "model.ckpt-1"), wrong)


def _r18_sk_release(out: Path) -> None:
    """A TF1 release folder (checkpoint state file from another machine) and the outputs of
    its EMA weights (every trainable variable + 0.5), as TensorFlow computes them."""
    import tensorflow as tf

    from tests.tf_official_reference import OfficialModel, write_tf1

    model = OfficialModel(depth=18, width=1, sk=True, num_classes=None, seed=11)
    write_tf1(str(out / "r18_1x_sk1" / "model.ckpt-250228"), model.tf1_variables(0.5))
    state = 'model_checkpoint_path: "/big/disk/model.ckpt-250228"\n'
    (out / "r18_1x_sk1" / "checkpoint").write_text(state)
    for variable in model.trainable_variables:
        if "moving" not in model.registry.tf1_names[id(variable)]:
            variable.assign_add(tf.fill(variable.shape, 0.5))
    images = sample_images(size=45)
    np.savez(out / "ema_outputs.npz", images=images, **model.outputs(images))


def _grey_release(out: Path) -> None:
    from tests.tf_official_reference import OfficialModel, write_tf1

    model = OfficialModel(num_classes=None, **GREY_RELEASE)
    variables = model.tf1_variables(ema_offset=None)
    write_tf1(str(out / "release" / "model.ckpt-1000"), variables)
    np.savez(out / "variables.npz", stem_kernel=variables["base_model/conv2d/kernel"].numpy())


CASES = {"bundle": _bundle, "r50": _r50, "r18": _r18,
         "r18_sk_release": _r18_sk_release, "grey_release": _grey_release}  # fmt: skip

if __name__ == "__main__":
    CASES[sys.argv[1]](Path(sys.argv[2]))
