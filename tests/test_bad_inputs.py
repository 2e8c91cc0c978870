"""The bad-input catalogue: every input a user can get wrong, the exit status and the first
line of the message they see (docs/bad-inputs.md is rendered from ROWS; a test keeps the two
in sync: `python -m tests.test_bad_inputs` prints the table).

Each row drives the real CLI (`simclrv2.cli.main`) on real files: images written with Pillow,
shards written by the shard step, models by the library, a KFP API fake that speaks the REST
protocol. A failing row must exit 2 (the user must change something) or 1 (something failed
while running), print its one line first on stderr with no traceback, and leave no manifest
or model.pt in its output folder. A few rows also run as real subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from simclrv2.cli import main

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "bad-inputs.md"
CLI = Path(sys.executable).parent / "simclrv2"
SHARD = "shard --source <tmp>/src --output <tmp>/out --labels-per-class 1"
PRETRAIN = "pretrain --config <tmp>/run.yaml --dataset <tmp>/data --output <tmp>/out"
FINETUNE = "finetune --config <tmp>/run.yaml --dataset <tmp>/data --output <tmp>/out"
TINY = {  # a run config that trains in seconds on two CPU cores
    "data": {"image_size": 28, "image_mode": "gray", "num_workers": 0, "shuffle_buffer": 8},
    "model": {"encoder": {"depth": 18, "width_multiplier": 0.125}},
    "pretrain": {"optimizer": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0.0}},
    "finetune": {"optimizer": {"epochs": 1, "batch_size": 4}},
    "supervised": {
        "optimizer": {"epochs": 1, "batch_size": 4, "warmup_epochs": 0.0, "min_steps": 0}
    },
    "runtime": {"bf16": False, "channels_last": False, "device": "cpu"},
}


# --- real input files ---------------------------------------------------------------------


def write_image(path: Path, seed: int = 0, mode: str = "L", size: int = 28) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def image_folder(root: Path, classes=("cat", "dog"), train: int = 3, val: int = 1) -> Path:
    """root/train/<class>/<class><i>.png and root/val/<class>/..., grey 28 px noise."""
    for split, count in (("train", train), ("val", val)):
        for index, name in enumerate(classes):
            for i in range(count):
                write_image(root / split / name / f"{name}{i}.png", seed=100 * index + i)
    return root


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def corrupt_png(path: Path) -> None:
    write_image(path, seed=2, mode="RGB", size=64)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 20
    data[start : start + 40] = bytes(b ^ 0xFF for b in data[start : start + 40])
    path.write_bytes(bytes(data))


def bomb_png(path: Path, side: int = 20_000) -> None:
    """A real 8x8 PNG whose header claims side x side pixels (the header is all PIL reads
    before refusing)."""
    write_image(path, size=8)
    data = path.read_bytes()
    header = bytearray(data[16:29])  # the IHDR chunk's data
    struct.pack_into(">II", header, 0, side, side)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(header)))
    path.write_bytes(data[:16] + bytes(header) + crc + data[33:])


def sixteen_bit_png(path: Path) -> None:
    Image.fromarray(np.full((28, 28), 0x8000, dtype=np.uint16)).save(path)  # mode I;16


def cmyk_jpeg(path: Path) -> None:
    Image.new("CMYK", (28, 28), (0, 255, 255, 0)).save(path, "JPEG")  # red, in ink


def tiny_model(path: Path, kind: str = "contrastive", channels: int = 1) -> None:
    from simclrv2.models.resnet import EncoderConfig
    from simclrv2.models.simclr_model import Classifier, ContrastiveModel, ModelConfig
    from simclrv2.steps.model_artifact import save_model
    from simclrv2.storage.object_store import ObjectStore

    encoder = EncoderConfig(18, 0.125, 0.0, True, channels)
    if kind == "contrastive":
        model = ContrastiveModel(ModelConfig(encoder))
    else:
        model = Classifier(encoder, 2, 1)
    save_model(ObjectStore(), str(path), model)


def write_config(tmp: Path, **changes) -> None:
    config = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        section, name = key.split("__")
        config.setdefault(section, {})[name] = value
    (tmp / "run.yaml").write_text(yaml.safe_dump(config))


# --- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    input: str  # what is wrong, in words
    command: str  # what the user runs; <tmp> is the test's folder, <host> a KFP API server
    exit: int
    first_line: str  # stderr's first line; empty for an accepted input
    setup: Callable[[Path, Shared], None] = lambda tmp, shared: None
    accepted: str = ""  # for exit 0: what happens instead of an error
    check: Callable[[Path], None] | None = None  # for exit 0: the accepted behaviour
    kfp: str = ""  # "fake": a KFP API fake at <host>; "token": one that wants another token
    env: dict = field(default_factory=dict)


@dataclass
class Shared:
    dataset: Path  # a small published dataset (2 grey classes, 28 px) to copy


def folder(build: Callable[[Path], None] | None = None, **kwargs):
    """Setup: an image folder at <tmp>/src, then `build(src)` spoils it."""

    def setup(tmp: Path, shared: Shared) -> None:
        src = image_folder(tmp / "src", **kwargs)
        if build is not None:
            build(src)

    return setup


def dataset(build: Callable[[Path], None] | None = None, config: dict | None = None):
    """Setup: the shared dataset copied to <tmp>/data and a run config at <tmp>/run.yaml."""

    def setup(tmp: Path, shared: Shared) -> None:
        shutil.copytree(shared.dataset, tmp / "data")
        manifest = tmp / "data" / "manifest.json"  # it names its shards by absolute path
        manifest.write_text(manifest.read_text().replace(str(shared.dataset), str(tmp / "data")))
        write_config(tmp, **(config or {}))
        if build is not None:
            build(tmp)

    return setup


def _manifest(tmp: Path) -> dict:
    return json.loads((tmp / "out" / "manifest.json").read_text())


def _decoded(tmp: Path, key: str) -> np.ndarray:
    """The training loader's image tensor of one sample (image_mode unset: as stored)."""
    from simclrv2.shards.loader import make_shard_loader
    from simclrv2.shards.verify import load_manifest

    loader = make_shard_loader(load_manifest(str(tmp / "out")), "unlabeled", None, batch_size=1,
                               num_workers=0, with_keys=True, check=False)  # fmt: skip
    return next(images[0].numpy() for images, _, keys in loader if keys[0] == key)


def _only_images_counted(tmp: Path) -> None:
    assert _manifest(tmp)["splits"]["unlabeled"]["samples"] == 6


def _sixteen_bit_scaled(tmp: Path) -> None:
    pixels = _decoded(tmp, "cat_deep")
    assert pixels.shape == (1, 28, 28) and int(pixels.max()) == 128  # 0x8000 >> 8, not 255


def _cmyk_as_rgb(tmp: Path) -> None:
    pixels = _decoded(tmp, "cat_ink")
    assert pixels.shape == (3, 28, 28)
    red, green, blue = (int(pixels[c].mean()) for c in range(3))
    assert red > 200 and green < 60 and blue < 60


def _spoil_manifest(tmp: Path, **changes) -> None:
    path = tmp / "data" / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _append_to_shard(tmp: Path) -> None:
    shard = sorted((tmp / "data").glob("unlabeled-*.tar"))[0]
    shard.write_bytes(shard.read_bytes() + b"\0" * 512)


def _flip_shard_byte(tmp: Path) -> None:
    shard = sorted((tmp / "data").glob("test-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))


def _first_run_checkpoint(tmp: Path) -> None:
    """A real pretrain step of one step on a copy of the dataset, checkpointing to <tmp>/ck."""
    shutil.copytree(tmp / "data", tmp / "other-data")
    argv = shlex.split(PRETRAIN.replace("<tmp>", str(tmp)))
    argv[argv.index("--dataset") + 1] = str(tmp / "other-data")
    argv[argv.index("--output") + 1] = str(tmp / "first-run")
    assert main([*argv, "--checkpoint-dir", str(tmp / "ck"), "--max-steps", "1"]) == 0


ROWS: list[Row] = [
    # --- sources and images (simclrv2 shard) ---
    Row(
        "unknown-source",
        "a source that is neither a built-in dataset nor a folder",
        "shard --source imagenet21k --output <tmp>/out",
        2,
        "simclrv2: error: source 'imagenet21k' is neither a built-in dataset (fashion-mnist, "
        "mnist, cifar10, stl10) nor an existing ImageFolder directory (train/<class>/..., val/ "
        "or test/)",
    ),
    Row(
        "no-test-split",
        "an image folder without val/ or test/",
        SHARD,
        2,
        "simclrv2: error: <tmp>/src: neither val/ nor test/ found; one of them must hold the "
        "test split",
        folder(lambda src: shutil.rmtree(src / "val")),
    ),
    Row(
        "empty-class-folder",
        "an empty class folder",
        SHARD,
        2,
        "simclrv2: error: class folder <tmp>/src/train/bird holds no jpg/jpeg/png images: add "
        "some or remove the folder (every folder in train/ is a class)",
        folder(lambda src: (src / "train" / "bird").mkdir()),
    ),
    Row(
        "class-without-images",
        "a class folder holding only non-image files",
        SHARD,
        2,
        "simclrv2: error: class folder <tmp>/src/train/bird holds no jpg/jpeg/png images: add "
        "some or remove the folder (every folder in train/ is a class)",
        folder(
            lambda src: (
                (src / "train" / "bird").mkdir(),
                (src / "train" / "bird" / "notes.txt").write_text("birds"),
            )
        ),
    ),
    Row(
        "non-image-files",
        "non-image files (.txt, .csv, .DS_Store) beside the images",
        SHARD,
        0,
        "",
        folder(
            lambda src: (
                (src / "train" / "cat" / "notes.txt").write_text("x"),
                (src / "train" / "labels.csv").write_text("x"),
                (src / "train" / "dog" / ".DS_Store").write_bytes(b"\0"),
            )
        ),
        accepted="ignored: only .jpg/.jpeg/.png files in class folders are images",
        check=_only_images_counted,
    ),
    Row(
        "not-an-image",
        "a text file named like an image (cat/fake.jpg)",
        SHARD,
        2,
        "simclrv2: error: <tmp>/src/train/cat/fake.jpg is not a JPEG or PNG image despite its "
        "name: delete it or replace it with the real image",
        folder(lambda src: (src / "train" / "cat" / "fake.jpg").write_text("not an image")),
    ),
    Row(
        "truncated-jpeg",
        "a truncated JPEG (an interrupted download)",
        SHARD,
        2,
        "simclrv2: error: <tmp>/src/train/cat/cut.jpg cannot be decoded (image file is "
        "truncated (146 bytes not processed)): it is truncated or corrupt; re-download or "
        "delete it",
        folder(lambda src: truncated_jpeg(src / "train" / "cat" / "cut.jpg")),
    ),
    Row(
        "corrupt-png",
        "a PNG with damaged pixel data",
        SHARD,
        2,
        "simclrv2: error: <tmp>/src/val/dog/broken.png cannot be decoded (broken data stream "
        "when reading image file): it is truncated or corrupt; re-download or delete it",
        folder(lambda src: corrupt_png(src / "val" / "dog" / "broken.png")),
    ),
    Row(
        "several-bad-images",
        "several undecodable images",
        SHARD,
        2,
        "simclrv2: error: 2 image files cannot be used: <tmp>/src/train/cat/cut.jpg cannot be "
        "decoded (image file is truncated (146 bytes not processed)): it is truncated or corrupt; "
        "re-download or delete it; the others: <tmp>/src/train/dog/fake.png",
        folder(
            lambda src: (
                truncated_jpeg(src / "train" / "cat" / "cut.jpg"),
                (src / "train" / "dog" / "fake.png").write_text("x"),
            )
        ),
    ),
    Row(
        "sixteen-bit-png",
        "a 16-bit greyscale PNG",
        SHARD,
        0,
        "",
        folder(lambda src: sixteen_bit_png(src / "train" / "cat" / "deep.png")),
        accepted="stored as is; training scales it to 8 bits by its high byte (PIL alone "
        "would clip it to white)",
        check=_sixteen_bit_scaled,
    ),
    Row(
        "cmyk-jpeg",
        "a CMYK JPEG (ImageNet's training set has some)",
        SHARD,
        0,
        "",
        folder(lambda src: cmyk_jpeg(src / "train" / "cat" / "ink.jpg")),
        accepted="stored as is; training converts it to RGB (3 channels, also when "
        "data.image_mode is unset)",
        check=_cmyk_as_rgb,
    ),
    Row(
        "decompression-bomb",
        "an image of 20000 x 20000 pixels (a decompression bomb)",
        SHARD,
        2,
        "simclrv2: error: <tmp>/src/train/dog/huge.png has 400,000,000 pixels, more than the "
        "89,478,485 an image may have (a decompression bomb, or a scan far larger than training "
        "needs): downscale it",
        folder(lambda src: bomb_png(src / "train" / "dog" / "huge.png")),
    ),
    Row(
        "case-duplicate-classes",
        "class folders Cat and cat",
        SHARD,
        2,
        "simclrv2: error: class folders 'Cat' and 'cat' in <tmp>/src/train differ only in case: "
        "merge them into one folder, or rename one if they really are different classes",
        folder(lambda src: write_image(src / "train" / "Cat" / "c.png")),
    ),
    Row(
        "non-utf8-name",
        "a file name that is not UTF-8 (Latin-1 café.png)",
        SHARD,
        2,
        "simclrv2: error: 1 name(s) in <tmp>/src/train are not valid UTF-8, e.g. "
        "b'cat/caf\\xe9.png': rename them to UTF-8, e.g. `convmv -f latin1 -t utf8 -r --notest "
        "<folder>`",
        folder(lambda src: write_image(Path(os.fsdecode(bytes(src) + b"/train/cat/caf\xe9.png")))),
    ),
    # --- label subsets ---
    Row(
        "label-file-unknown-names",
        "a label file naming images that do not exist",
        "shard --source <tmp>/src --output <tmp>/out --label-file <tmp>/labels.txt",
        2,
        "simclrv2: error: 2 of the 3 names in <tmp>/labels.txt match no image: cat9.png, "
        "n01440764_10026.JPEG (names are file names of train/ images, e.g. "
        "n01440764_10026.JPEG): fix the list or add the images",
        lambda tmp, shared: (
            image_folder(tmp / "src"),
            (tmp / "labels.txt").write_text("cat0.png\ncat9.png\nn01440764_10026.JPEG\n"),
        ),
    ),
    Row(
        "label-file-missing",
        "a label file that does not exist",
        "shard --source <tmp>/src --output <tmp>/out --label-file <tmp>/1percent.txt",
        2,
        "simclrv2: error: label file <tmp>/1percent.txt does not exist: pass a text file with "
        "one image file name per line (the 1percent.txt format)",
        folder(),
    ),
    Row(
        "label-fraction-0",
        "--label-fraction 0",
        "shard --source <tmp>/src --output <tmp>/out --label-fraction 0",
        2,
        "simclrv2: error: label fraction must be in (0, 1], e.g. 0.01 for 1 % of the labels; "
        "got 0.0",
        folder(),
    ),
    Row(
        "label-fraction-1.5",
        "--label-fraction 1.5 (meant 1.5 %?)",
        "shard --source <tmp>/src --output <tmp>/out --label-fraction 1.5",
        2,
        "simclrv2: error: label fraction must be in (0, 1], e.g. 0.01 for 1 % of the labels; "
        "got 1.5",
        folder(),
    ),
    Row(
        "label-fraction-nan",
        "--label-fraction nan",
        "shard --source <tmp>/src --output <tmp>/out --label-fraction nan",
        2,
        "simclrv2: error: label fraction must be in (0, 1], e.g. 0.01 for 1 % of the labels; "
        "got nan",
        folder(),
    ),
    Row(
        "more-labels-than-images",
        "more labeled images per class than a class has",
        "shard --source <tmp>/src --output <tmp>/out --labels-per-class 5",
        2,
        "simclrv2: error: class 0 has 3 images, fewer than the 5 labeled images per class asked "
        "for: ask for at most 3 per class, or fraction 1 (every image)",
        folder(),
    ),
    Row(
        "bad-shard-size",
        "a shard size without a known unit",
        "shard --source <tmp>/src --output <tmp>/out --max-bytes-per-shard 1XB",
        2,
        "simclrv2 shard: error: argument --max-bytes-per-shard: '1XB' is not a size: use bytes "
        "or a unit, e.g. 256MiB, 1GiB, 500MB",
        folder(),
    ),
    Row(
        "part-out-of-range",
        "--part beyond --num-parts",
        "shard --source <tmp>/src --output <tmp>/out --num-parts 2 --part 5",
        2,
        "simclrv2: error: part 5 is out of range for 2 parts (0 to 1)",
        folder(),
    ),
    Row(
        "output-holds-another-dataset",
        "an --output where another dataset is published",
        "shard --source <tmp>/src --output <tmp>/data --labels-per-class 2",
        2,
        "simclrv2: error: a different dataset is already published at <tmp>/data (from "
        "imagefolder:<shared>/template-src); published datasets are never overwritten: choose "
        "another --output, or delete that one",
        lambda tmp, shared: (
            image_folder(tmp / "src"),
            shutil.copytree(shared.dataset, tmp / "data"),
        ),
    ),
    # --- published datasets (simclrv2 verify, training steps) ---
    Row(
        "newer-manifest",
        "a dataset manifest written by a newer simclrv2",
        "verify <tmp>/data",
        2,
        "simclrv2: error: <tmp>/data/manifest.json was written by a newer simclrv2 "
        "(format_version 2; this one reads 1): upgrade simclrv2, or shard the source again "
        "with it",
        dataset(lambda tmp: _spoil_manifest(tmp, format_version=2)),
    ),
    Row(
        "tampered-shard",
        "a shard changed after publishing (one byte flipped)",
        "verify <tmp>/data",
        1,
        "simclrv2: error: 1 of 3 shards do not match the manifest (BAD or MISSING above): the "
        "dataset changed after it was published; shard the source again to a new --output",
        dataset(_flip_shard_byte),
    ),
    Row(
        "no-dataset",
        "a dataset path without a manifest",
        "verify <tmp>/nowhere",
        2,
        "simclrv2: error: no dataset at <tmp>/nowhere: <tmp>/nowhere/manifest.json does not "
        "exist (a dataset exists only once its manifest is written; was the shard step run to "
        "the end?)",
    ),
    Row(
        "train-on-tampered-shard",
        "training on a dataset whose shard grew after publishing",
        PRETRAIN,
        2,
        "simclrv2: error: shard <tmp>/data/unlabeled-000-00000.tar has 92672 bytes "
        "but the manifest says 92160: the dataset was modified after publishing; re-shard it",
        dataset(_append_to_shard),
    ),
    # --- run configuration ---
    Row(
        "config-unknown-key",
        "a misspelt setting in the config file",
        PRETRAIN,
        2,
        "simclrv2: error: unknown setting pretrain.temprature (did you mean "
        "pretrain.temperature?); settings here: blur, color_jitter_strength, knn, moco, "
        "optimizer, temperature",
        dataset(lambda tmp: (tmp / "run.yaml").write_text("pretrain: {temprature: 0.5}\n")),
    ),
    Row(
        "config-wrong-type",
        "a setting of the wrong type",
        PRETRAIN + " --set pretrain.optimizer.epochs=ten",
        2,
        "simclrv2: error: pretrain.optimizer.epochs: expected int, got 'ten'",
        dataset(),
    ),
    Row(
        "config-negative-lr",
        "a negative learning rate",
        PRETRAIN + " --set pretrain.optimizer.base_learning_rate=-0.1",
        2,
        "simclrv2: error: pretrain.optimizer.base_learning_rate must be > 0, got -0.1",
        dataset(),
    ),
    Row(
        "config-not-yaml",
        "a config file that is not YAML",
        PRETRAIN,
        2,
        "simclrv2: error: config file <tmp>/run.yaml is not valid YAML: while parsing a flow node",
        dataset(lambda tmp: (tmp / "run.yaml").write_text("pretrain: {optimizer: [\n")),
    ),
    Row(
        "config-missing",
        "a config file that does not exist",
        "pretrain --config <tmp>/nowhere.yaml --dataset <tmp>/data --output <tmp>/out",
        2,
        "simclrv2: error: config file <tmp>/nowhere.yaml does not exist",
    ),
    Row(
        "bad-override",
        "an override without a value",
        PRETRAIN + " --set pretrain.temperature",
        2,
        "simclrv2: error: override 'pretrain.temperature' must look like section.key=value",
        dataset(),
    ),
    Row(
        "batch-not-divisible",
        "a global batch of 16 over 3 processes (torchrun)",
        PRETRAIN,
        2,
        "simclrv2: error: pretrain.optimizer.batch_size 16 (global) does not divide evenly over "
        "3 processes: set it to a multiple of 3, e.g. 15 or 18",
        dataset(),
        env={"WORLD_SIZE": "3"},
    ),
    Row(
        "no-dataset-given",
        "a training step without --dataset",
        "pretrain --config <tmp>/run.yaml --output <tmp>/out",
        2,
        "simclrv2: error: no dataset: pass --dataset or set data.dataset in the config",
        dataset(),
    ),
    # --- models and checkpoints ---
    Row(
        "finetune-from-a-classifier",
        "a fine-tuned model passed to finetune as --pretrained",
        FINETUNE + " --pretrained <tmp>/teacher.pt",
        2,
        "simclrv2: error: <tmp>/teacher.pt is a Classifier, not a pretrain output: pass the "
        "pretrain step's model.pt as --pretrained",
        dataset(lambda tmp: tiny_model(tmp / "teacher.pt", "classifier")),
    ),
    Row(
        "finetune-from-a-foreign-file",
        "another program's weights (a bare state_dict)",
        FINETUNE + " --pretrained <tmp>/resnet18.pt",
        2,
        "simclrv2: error: <tmp>/resnet18.pt is not a simclrv2 model artifact of format 1 (a "
        "plain state_dict or another program's file?): pass the model.pt a simclrv2 step wrote",
        dataset(
            lambda tmp: __import__("torch").save(
                {"conv1.weight": __import__("torch").zeros(2, 3, 7, 7)}, tmp / "resnet18.pt"
            )
        ),
    ),
    Row(
        "finetune-channels-differ",
        "an RGB pretrained model for grey images",
        FINETUNE + " --pretrained <tmp>/rgb.pt",
        2,
        "simclrv2: error: <tmp>/rgb.pt takes 3-channel images but data.image_mode 'gray' gives "
        "1: set data.image_mode as it was for pretraining",
        dataset(lambda tmp: tiny_model(tmp / "rgb.pt", channels=3)),
    ),
    Row(
        "finetune-missing-model",
        "a --pretrained path that does not exist",
        FINETUNE + " --pretrained <tmp>/nowhere/model.pt",
        2,
        "simclrv2: error: no model at <tmp>/nowhere/model.pt: pass the model.pt a simclrv2 step "
        "wrote",
        dataset(),
    ),
    Row(
        "checkpoint-of-another-run",
        "a --checkpoint-dir holding another run's checkpoint",
        PRETRAIN + " --checkpoint-dir <tmp>/ck",
        2,
        "simclrv2: error: the checkpoint <tmp>/ck/step-000000001.pt is from another run "
        "(data.dataset was '<tmp>/other-data', this run has '<tmp>/data'): use a new "
        "--checkpoint-dir (or --output), or delete that checkpoint folder",
        dataset(_first_run_checkpoint),
    ),
    Row(
        "evaluate-bad-model-flag",
        "an evaluate --model without NAME=",
        "evaluate --config <tmp>/run.yaml --dataset <tmp>/data --output <tmp>/out "
        "--model <tmp>/model.pt",
        2,
        "simclrv2: error: --model '<tmp>/model.pt' must look like NAME=URI, e.g. "
        "teacher=s3://runs/r1/finetune/model.pt",
        dataset(),
    ),
    # --- Kubeflow Pipelines ---
    Row(
        "cron-five-fields",
        "a 5-field crontab line for a schedule",
        "pipeline schedule --job-name nightly --cron '0 2 * * *' --host <host>",
        2,
        "simclrv2: error: cron '0 2 * * *' has 5 fields; KFP cron has 6, seconds first: prepend "
        "the seconds field, e.g. '0 0 2 * * *'",
    ),
    Row(
        "kfp-unreachable",
        "a KFP host nothing listens on",
        "pipeline run --pipeline-name simclrv2 --host <host>",
        1,
        "simclrv2: error: connecting to the KFP API server at <host>: cannot reach the KFP API "
        "server (HTTPConnection(host='127.0.0.1', port=<port>): Failed to establish a new "
        "connection: [Errno 111] Connection refused); check --host or $KFP_HOST and that the "
        "server (or its kubectl port-forward) is up",
        kfp="closed",
    ),
    Row(
        "kfp-token-expired",
        "an expired token (the API answers 401)",
        "pipeline run --pipeline-name simclrv2 --host <host> --namespace team-a "
        "--token-file <tmp>/token",
        2,
        "simclrv2: error: starting run 'nightly' of 'simclrv2': HTTP 401 Unauthorized (check "
        "the token: --token-file or $KF_PIPELINES_TOKEN, and --namespace): Unauthenticated: a "
        "valid bearer token is required",
        lambda tmp, shared: (tmp / "token").write_text("expired-token-value"),
        kfp="token",
    ),
    Row(
        "kfp-unknown-pipeline",
        "a pipeline name that was never uploaded",
        "pipeline run --pipeline-name simclrv3 --host <host>",
        2,
        "simclrv2: error: no pipeline named 'simclrv3' on the server (and no such package file): "
        "upload it first with `simclrv2 pipeline upload`",
        kfp="fake",
    ),
    Row(
        "kfp-no-host",
        "no KFP host given",
        "pipeline run --pipeline-name simclrv2",
        2,
        "simclrv2: error: no KFP API server: pass --host or set KFP_HOST, e.g. "
        "http://localhost:8888 after `kubectl -n kubeflow port-forward svc/ml-pipeline "
        "8888:8888`",
    ),
    Row(
        "kfp-missing-package",
        "uploading a package that was not compiled",
        "pipeline upload --package <tmp>/tiny.yaml --host <host>",
        2,
        "simclrv2: error: no pipeline package at <tmp>/tiny.yaml: compile it first (simclrv2 "
        "pipeline compile)",
        kfp="fake",
    ),
    Row(
        "kfp-bad-param",
        "a --param without =",
        "pipeline run --param epochs --host <host>",
        2,
        "simclrv2 pipeline run: error: argument --param: --param 'epochs' must look like KEY=VALUE",
    ),
    Row(
        "unknown-command",
        "a misspelt command",
        "shardd --source x",
        2,
        "simclrv2: error: argument COMMAND: invalid choice: 'shardd' (choose from 'quickstart', "
        "'params', 'shard', 'verify', 'import-tf', 'pretrain', 'finetune', 'pseudolabel', "
        "'distill', 'evaluate', 'pipeline')",
    ),
]


# --- running a row ------------------------------------------------------------------------

BY_ID = {row.id: row for row in ROWS}
SUBPROCESS_ROWS = ["unknown-source", "truncated-jpeg", "config-negative-lr", "tampered-shard",
                   "cron-five-fields", "kfp-unreachable"]  # fmt: skip


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """A published dataset made by the real shard step: 2 classes x 16 grey images."""
    from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
    from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset

    base = tmp_path_factory.mktemp("shared")
    source = image_folder(base / "template-src", train=16, val=2)
    request = ShardRequest(str(source), str(base / "dataset"), LabelSubsetSpec(per_class=1))
    shard_dataset(request)
    return Shared(base / "dataset")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No settings from this machine: KFP host and token, Pushgateway, torchrun variables."""
    for name in ("KFP_HOST", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN", "PUSHGATEWAY_URL",
                 "WORLD_SIZE", "RANK", "LOCAL_RANK"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    import kfp.client.client

    monkeypatch.setattr(
        kfp.client.client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json")
    )


class _Host:
    """<host> for a row: the KFP API fake it asks for, or a port nothing listens on."""

    def __init__(self, kind: str) -> None:
        from tests.kfp_api_fake import FakeKfpServer

        self.server = None
        if kind in ("fake", "token"):
            token = "a-fresh-token" if kind == "token" else None
            self.server = FakeKfpServer(required_token=token).start()
            self.url = self.server.url
        else:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        self.port = self.url.rsplit(":", 1)[1]

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def _prepare(row: Row, tmp: Path, shared: Shared) -> tuple[list[str], _Host]:
    row.setup(tmp, shared)
    host = _Host(row.kfp)
    command = row.command.replace("<tmp>", str(tmp)).replace("<host>", host.url)
    if row.id == "kfp-token-expired":
        command += " --run-name nightly"
    return shlex.split(command), host


def _normalised(text: str, tmp: Path, host: _Host, shared: Shared) -> str:
    text = text.replace(str(tmp), "<tmp>").replace(str(shared.dataset.parent), "<shared>")
    return text.replace(host.url, "<host>").replace(host.port, "<port>")


def _assert_outcome(row: Row, tmp: Path, code: int, out: str, err: str, host: _Host,
                    shared: Shared) -> None:  # fmt: skip
    assert code == row.exit, err
    assert "Traceback" not in out + err
    first = _normalised(err.splitlines()[0], tmp, host, shared) if err.strip() else ""
    assert first == row.first_line
    if row.exit != 0:  # nothing left that looks like a finished output
        left = {p.name for p in (tmp / "out").rglob("*")} if (tmp / "out").exists() else set()
        assert not left & {"manifest.json", "model.pt"}, sorted(left)
    elif row.check is not None:
        row.check(tmp)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_gives_one_clear_error(row, tmp_path, shared, capsys, monkeypatch):
    argv, host = _prepare(row, tmp_path, shared)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()  # what the setup printed
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    finally:
        host.close()
    output = capsys.readouterr()
    _assert_outcome(row, tmp_path, code, output.out, output.err, host, shared)


@pytest.mark.parametrize("row_id", SUBPROCESS_ROWS)
def test_bad_input_end_to_end_in_a_subprocess(row_id, tmp_path, shared):
    row = BY_ID[row_id]
    argv, host = _prepare(row, tmp_path, shared)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFP_", "KF_PIPELINES"))}
    try:
        done = subprocess.run([str(CLI), *argv], capture_output=True, text=True, timeout=120,
                              env=env | row.env, cwd=tmp_path)  # fmt: skip
    finally:
        host.close()
    _assert_outcome(row, tmp_path, done.returncode, done.stdout, done.stderr, host, shared)


def test_debug_shows_the_traceback_and_keeps_the_exit_status(tmp_path):
    argv = [str(CLI), "--debug", "shard", "--source", "nowhere", "--output", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("simclrv2: error: source 'nowhere'")


def test_an_unforeseen_failure_exits_1_and_names_its_type(capsys, monkeypatch):
    import simclrv2.cli.params as params_command

    def crash(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(params_command, "_run_params", crash)
    assert main(["params"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "simclrv2: error: RuntimeError: a bug",
        "simclrv2: rerun with --debug to see where it failed",
    ]


def test_a_worker_error_shows_the_original_message_only():
    from simclrv2.errors import message_of
    from simclrv2.shards.loader import CorruptDataError

    # How torch re-raises an exception from a DataLoader worker in the main process.
    wrapped = CorruptDataError(
        "Caught CorruptDataError in DataLoader worker process 0.\nOriginal Traceback (most "
        'recent call last):\n  File "x.py", line 1, in f\nsimclrv2.shards.loader.'
        "CorruptDataError: 3 of 50 samples could not be decoded"
    )
    assert message_of(wrapped) == "3 of 50 samples could not be decoded"


def test_no_message_shows_a_secret(tmp_path, capsys):
    """The S3 secret given on the command line never reaches the message."""
    secret = "wJalrXUtnFEMI-K7MDENG-s3cr3t"
    code = main(["verify", "s3://bucket/data", "--s3-endpoint-url", "http://127.0.0.1:9",
                 "--s3-access-key-id", "key", "--s3-secret-access-key", secret])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "cannot reach S3 endpoint" in err and secret not in err


# --- the catalogue in docs/bad-inputs.md --------------------------------------------------


def _cell(text: str) -> str:
    """A table cell: code, with | escaped (GitHub tables split on it even inside code)."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render_table() -> str:
    lines = ["| input | command | exit | first line of stderr |", "|---|---|---|---|"]
    for row in ROWS:
        shown = _cell(row.first_line) if row.first_line else f"(none: accepted) {row.accepted}"
        lines.append(
            f'| {row.input} <a id="{row.id}"></a> | {_cell("simclrv2 " + row.command)} | '
            f"{row.exit} | {shown} |"
        )
    return "\n".join(lines) + "\n"


def test_the_document_lists_every_row():
    assert render_table() in DOC.read_text(), "run: python -m tests.test_bad_inputs"


def test_the_catalogue_is_large_and_covers_both_exit_statuses():
    assert len(ROWS) >= 30 and len(BY_ID) == len(ROWS)
    assert {row.exit for row in ROWS} == {0, 1, 2}


if __name__ == "__main__":
    print(render_table(), end="")
