"""The paper's claim at laptop scale: how far do 1 % of the labels go with SimCLRv2?

For each dataset (Fashion-MNIST, MNIST; 28 px, the quick start's network and recipe from
configs/quickstart.yaml), each label fraction (1 %, 10 %), each pretraining length (2 and 20
epochs) and each seed, it measures on the dataset's test split:

- supervised (tuned): the same network from scratch on the labeled images only, with its own
  recipe (SGD with Nesterov momentum, warmup + cosine, crop and flip), the learning rate and
  weight decay chosen on a held-out fifth of the labeled images (never the test split), then
  retrained on all of them;
- SimCLRv2 linear evaluation and weighted kNN of the frozen pretrained encoder;
- the fine-tuned teacher and the distilled student (the pipeline's steps), the student
  distilled both ways: from the teacher's stored logits of the centre crop (`distill.teacher:
  stored`) and from the teacher run on the student's own augmented view (`online`, the
  paper's Eq. 2);
- supervised (tuned recipe) on 100 % of the labels: the ceiling.

Every result is appended to OUTPUT/results.json as soon as it exists, with the commit and
the machine it was measured on, and every step resumes from its checkpoints, so an
interrupted run continues where it stopped (rerun the same command). The table (mean and
spread over the seeds) is printed at the end, with the goal:
the student with 1 % of the labels at least the tuned supervised baseline with 10 %, and the
student at least its teacher.

    .venv/bin/python benchmarks/label_efficiency.py                      # hours on 2 CPU cores
    .venv/bin/python benchmarks/label_efficiency.py --seeds 0 --pretrain-epochs 2
    .venv/bin/python benchmarks/label_efficiency.py --sample-limit 2000 --seeds 0 \\
        --pretrain-epochs 1 --output runs/label-efficiency-smoke        # a quick check
"""

import argparse
import dataclasses
import functools
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script without installing the package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from simclrv2.config.loading import load_config  # noqa: E402
from simclrv2.config.run_config import RunConfig  # noqa: E402
from simclrv2.data.device_augmentations import EvalView, FinetuneView, to_device_batch  # noqa: E402
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec  # noqa: E402
from simclrv2.models.simclr_model import Classifier  # noqa: E402
from simclrv2.optim.lr_schedule import warmup_cosine_scheduler  # noqa: E402
from simclrv2.shards.loader import make_shard_loader  # noqa: E402
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset  # noqa: E402
from simclrv2.steps.distill import distill  # noqa: E402
from simclrv2.steps.evaluate import evaluate  # noqa: E402
from simclrv2.steps.finetune import finetune  # noqa: E402
from simclrv2.steps.pretrain import pretrain  # noqa: E402
from simclrv2.steps.pseudolabel import pseudolabel  # noqa: E402

# The tuned baseline's grid: peak learning rate per 256 images, and L2 weight decay.
LEARNING_RATES = (0.05, 0.1, 0.2, 0.4)
WEIGHT_DECAYS = (5e-5, 5e-4)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "mnist"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1])
    parser.add_argument("--pretrain-epochs", nargs="+", type=int, default=[2, 20])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--supervised-steps", type=int, default=1500,
                        help="optimizer steps of the supervised training (batch 128)")  # fmt: skip
    parser.add_argument("--grid-steps", type=int, default=None,
                        help="steps of each grid trial (default: --supervised-steps)")  # fmt: skip
    parser.add_argument("--learning-rates", nargs="+", type=float, default=list(LEARNING_RATES),
                        help="the supervised grid's peak rates per 256 images")  # fmt: skip
    parser.add_argument("--weight-decays", nargs="+", type=float, default=list(WEIGHT_DECAYS),
                        help="the supervised grid's weight decays")  # fmt: skip
    parser.add_argument("--sample-limit", type=int, default=None,
                        help="only the first N images of each split (quick checks)")  # fmt: skip
    parser.add_argument("--no-ceiling", action="store_true", help="skip supervised on 100 %%")
    parser.add_argument("--distill-teachers", nargs="+", default=["online", "stored"],
                        choices=["stored", "online"],
                        help="distill the student from these (the first: 'student')")  # fmt: skip
    parser.add_argument("--output", default="runs/label-efficiency")
    return parser.parse_args(argv)


def measured_on() -> dict:
    """The commit (with a + when the tree has changes) and the machine of a result."""

    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=False).stdout.strip()  # fmt: skip

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += "+"
    threads = torch.get_num_threads()
    machine = f"{cpu_model()}, {threads} threads, torch {torch.__version__}"
    return {"commit": commit, "machine": machine}


class Results:
    """results.json: key -> result, written after every new result (resumable)."""

    def __init__(self, path: Path):
        self.path = path
        self.values = json.loads(path.read_text()) if path.exists() else {}
        self.origin = measured_on()

    def get_or_run(self, key: str, run, *arguments) -> dict:
        return self.values[key] if key in self.values else self.measure(key, run, *arguments)

    def measure(self, key: str, run, *arguments) -> dict:
        """Run, and record what it returns with its time, commit and machine."""
        started = time.perf_counter()
        found = run(*arguments)
        seconds = round(time.perf_counter() - started, 1)
        self.values[key] = found | {"seconds": seconds} | self.origin
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.values, indent=1))
        print(f"[label-efficiency] {key}: {self.values[key]}", flush=True)
        return self.values[key]


def shard(source: str, fraction: float, seed: int, root: Path, sample_limit) -> str:
    output = root / "data" / f"{source}-{fraction:g}-s{seed}"
    labels = LabelSubsetSpec(fraction=fraction, seed=seed)
    shard_dataset(ShardRequest(source, str(output), labels, seed=seed, sample_limit=sample_limit))
    return str(output)


def load_split(dataset: str, split: str, config: RunConfig):
    """Every image of a split, decoded (uint8) into memory, with its labels."""
    from simclrv2.shards.verify import load_manifest

    loader = make_shard_loader(
        load_manifest(dataset), split, batch_size=1024, num_workers=0, shuffle_buffer=0,
        rank=0, world_size=1, image_mode=config.data.image_mode, persistent_workers=False,
    )  # fmt: skip
    images, labels = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(labels)


def train_supervised(images, labels, config: RunConfig, classes: int, lr: float, decay: float,
                     steps: int, seed: int) -> Classifier:  # fmt: skip
    """From scratch, on in-memory images: SGD + Nesterov, 5 % warmup, cosine; crop + flip."""
    torch.manual_seed(seed)
    encoder = config.model.encoder.encoder_config(config.data)
    model = Classifier(encoder, classes, 0, config.model.num_proj_layers,
                       zero_init_classifier=False).train()  # fmt: skip
    batch = min(128, len(images))
    peak = lr * batch / 256
    optimizer = torch.optim.SGD(model.parameters(), lr=peak, momentum=0.9, nesterov=True,
                                weight_decay=decay)  # fmt: skip
    scheduler = warmup_cosine_scheduler(optimizer, peak, max(1, steps // 20), steps)
    view = FinetuneView(config.data.image_size)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(images), (batch,))
        views = view(to_device_batch(images[index], torch.device("cpu")))
        loss = F.cross_entropy(model(views), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 250 == 0 or step == steps:
            elapsed = time.perf_counter() - started
            print(f"[supervised lr {lr:g} wd {decay:g}] step {step}/{steps} | "
                  f"loss {loss.item():.3f} | {step * batch / elapsed:.0f} img/s | "
                  f"ETA {elapsed / step * (steps - step):.0f} s", flush=True)  # fmt: skip
    return model.eval()


@torch.no_grad()
def accuracy(model, images, labels, config: RunConfig) -> float:
    view = EvalView(config.data.image_size)
    correct = 0
    for start in range(0, len(images), 1024):
        batch = view(to_device_batch(images[start : start + 1024], torch.device("cpu")))
        correct += (model(batch).argmax(1) == labels[start : start + 1024]).sum().item()
    return correct / len(images)


def tuned_supervised(dataset: str, config: RunConfig, steps: int, seed: int, grid) -> dict:
    """Grid (learning rates, weight decays, steps per trial) on a held-out fifth of the
    labeled images, then `steps` on all of them; test accuracy."""
    learning_rates, weight_decays, grid_steps = grid
    images, labels = load_split(dataset, "labeled", config)
    test_images, test_labels = load_split(dataset, "test", config)
    classes = int(max(labels.max(), test_labels.max())) + 1
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    held, kept = order[: len(order) // 5], order[len(order) // 5 :]
    scores = {}
    for lr in learning_rates:
        for decay in weight_decays:
            model = train_supervised(images[kept], labels[kept], config, classes, lr, decay,
                                     grid_steps, seed)  # fmt: skip
            scores[(lr, decay)] = accuracy(model, images[held], labels[held], config)
    lr, decay = max(scores, key=scores.get)
    model = train_supervised(images, labels, config, classes, lr, decay, steps, seed)
    return {"top1": accuracy(model, test_images, test_labels, config), "lr": lr,
            "weight_decay": decay, "validation_top1": scores[(lr, decay)],
            "grid": {f"{lr:g}/{decay:g}": value for (lr, decay), value in scores.items()},
            "grid_steps": grid_steps, "steps": steps, "labeled_images": len(images)}  # fmt: skip


def pretrained(config: RunConfig, folder: Path) -> dict:
    """Pretrain (resuming from its checkpoints); its steps, last loss and kNN curve."""
    done = pretrain(config, str(folder), print_fn=progress_only)
    history = json.loads((folder / "history.json").read_text())
    return {"steps": done.steps, "final_loss": done.final_loss,
            "knn_top1": [r["knn_top1"] for r in history if "knn_top1" in r],
            "resumed_from": done.resumed_from}  # fmt: skip


def progress_only(line: str) -> None:
    """The steps' budget, throughput and ETA lines; not their every record."""
    if "] budget:" in line or (" step " in line and "ETA" in line):
        print(line, flush=True)


def simclr(dataset: str, pretrained: str, config: RunConfig, folder: Path,
           teachers: list[str]) -> dict:  # fmt: skip
    """Fine-tune, pseudolabel, distill (once per teacher mode) and evaluate from a
    pretrained model. The first mode's student is "student", every mode's is "student_<mode>"."""
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=dataset))
    say = progress_only
    teacher = finetune(config, str(folder / "finetune"), pretrained, print_fn=say)
    pseudolabel(config, teacher.model_uri, str(folder / "pseudolabels"), print_fn=say)
    models = {"teacher": teacher.model_uri}
    for mode in teachers:
        modes = dataclasses.replace(config.distill, teacher=mode)
        settings = dataclasses.replace(config, distill=modes)
        student = distill(settings, str(folder / f"distill-{mode}"), teacher.model_uri,
                          str(folder / "pseudolabels"), print_fn=say)  # fmt: skip
        models[f"student_{mode}"] = student.model_uri
    metrics = evaluate(config, models, str(folder / "evaluate"), print_fn=say,
                       pretrained=pretrained)  # fmt: skip
    found = metrics["representation"]
    top1 = {name: metrics["models"][name]["top1"] for name in models}
    return {**top1, "student": top1[f"student_{teachers[0]}"],
            "linear": found["linear_top1"], "knn": found["knn_top1"]}  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(args.output)
    results = Results(root / "results.json")
    base = load_config(RunConfig, args.config, args.set)
    for source in args.datasets:
        for seed in args.seeds:
            config = dataclasses.replace(base, runtime=dataclasses.replace(base.runtime, seed=seed))
            data = {f: shard(source, f, seed, root, args.sample_limit) for f in args.fractions}
            steps = args.supervised_steps
            grid = (args.learning_rates, args.weight_decays, args.grid_steps or steps)
            for fraction, dataset in data.items():
                key = f"{source}/{fraction:g}/s{seed}/supervised"
                results.get_or_run(key, tuned_supervised, dataset, config, steps, seed, grid)
            if not args.no_ceiling:
                full = shard(source, 1.0, seed, root, args.sample_limit)
                results.get_or_run(f"{source}/1/s{seed}/supervised",
                                   tuned_supervised, full, config, steps, seed, grid)  # fmt: skip
            for epochs in args.pretrain_epochs:
                cells = {f: f"{source}/{f:g}/s{seed}/simclr-e{epochs}" for f in args.fractions}
                if all(key in results.values for key in cells.values()):
                    continue  # a kept results.json (benchmarks/measured/) needs no models
                folder = root / source / f"s{seed}" / f"e{epochs}"
                first = data[args.fractions[0]]  # the unlabeled split is the same for all
                settings = dataclasses.replace(config.pretrain.optimizer, epochs=epochs)
                pretrain_config = dataclasses.replace(
                    config, data=dataclasses.replace(config.data, dataset=first),
                    pretrain=dataclasses.replace(config.pretrain, optimizer=settings),
                )  # fmt: skip
                model = str(folder / "pretrain" / "model.pt")
                if not Path(model).exists():  # the model is the cache; the record has its time
                    results.measure(f"{source}/s{seed}/pretrain-e{epochs}", pretrained,
                                    pretrain_config, folder / "pretrain")  # fmt: skip
                for fraction, dataset in data.items():
                    cell = folder / f"f{fraction:g}"
                    results.get_or_run(cells[fraction], simclr, dataset, model, config, cell,
                                       args.distill_teachers)  # fmt: skip
    print_table(results.values, args)
    (root / "table.md").write_text(markdown_table(results.values, args))
    print(f"[label-efficiency] the table in markdown (for the README): {root / 'table.md'}")
    return 0


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"


def _pick(values: dict, source: str, fraction: float, kind: str, field="top1") -> list[float]:
    """One field of every seed's result for a cell (absent results are left out)."""
    return [values[k][field] for k in values
            if k.startswith(f"{source}/{fraction:g}/") and k.endswith(f"/{kind}")
            and field in values[k]]  # fmt: skip


NAMES = {"linear": "linear", "knn": "kNN", "teacher": "teacher"}


def markdown_table(values: dict, args) -> str:
    """The table as markdown, one row per dataset, label fraction and pretraining length,
    with the commits and machines its numbers come from (the README quotes this file)."""
    fields = ["linear", "knn", "teacher", *(f"student_{m}" for m in args.distill_teachers)]
    named = [NAMES.get(f, f.replace("student_", "student (") + ")") for f in fields]
    header = ["dataset", "labels", "supervised (tuned)", "pretraining", *named]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for source in args.datasets:
        for fraction in args.fractions:
            supervised = _cell(_pick(values, source, fraction, "supervised"))
            for epochs in args.pretrain_epochs:
                kind = f"simclr-e{epochs}"
                cells = [_cell(_pick(values, source, fraction, kind, f)) for f in fields]
                row = [source, f"{100 * fraction:g} %", supervised, f"{epochs} epochs", *cells]
                lines.append("| " + " | ".join(row) + " |")
        ceiling = _cell(_pick(values, source, 1.0, "supervised"))
        lines.append(f"| {source} | 100 % (ceiling) | {ceiling} |" + " |" * (len(header) - 3))
    for key, run in values.items():
        if "/pretrain-e" in key:
            knn = " -> ".join(f"{100 * v:.2f}" for v in run["knn_top1"]) or "-"
            lines.append(f"\n{key}: {run['steps']:,} steps in {run['seconds'] / 60:.0f} min, "
                         f"kNN top-1 by pass {knn}")  # fmt: skip
    seeds = ", ".join(map(str, args.seeds))
    commits = {}  # machine -> the commits measured on it, in the order they first appear
    for value in values.values():
        commits.setdefault(value["machine"], {})[value["commit"]] = None
    origins = [f"{', '.join(c)} on {machine}" for machine, c in commits.items()]
    return (
        "\n".join(lines) + f"\n\nTest top-1 (%), mean ± std over seeds {seeds}. "
        "Measured at commits " + "; ".join(origins) + ".\n"
    )


def print_table(values: dict, args) -> None:
    pick = functools.partial(_pick, values)

    print("\nTest top-1 (%), mean ± std over seeds", ", ".join(map(str, args.seeds)))
    for source in args.datasets:
        print(f"\n{source}")
        fields = ["linear", "knn", "teacher", *(f"student_{m}" for m in args.distill_teachers)]
        columns = ["supervised (tuned)"]
        for epochs in args.pretrain_epochs:
            columns += [f"{f.replace('student_', 'student ')} e{epochs}" for f in fields]
        print(f"  {'labels':<8}" + "".join(f"{c:>18}" for c in columns))
        for fraction in args.fractions:
            cells = [_cell(pick(source, fraction, "supervised"))]
            for epochs in args.pretrain_epochs:
                kind = f"simclr-e{epochs}"
                cells += [_cell(pick(source, fraction, kind, f)) for f in fields]
            print(f"  {fraction:<8g}" + "".join(f"{c:>18}" for c in cells))
        print(f"  {'1 (ceiling)':<8} {_cell(pick(source, 1.0, 'supervised')):>18}")
        low, high = min(args.fractions), max(args.fractions)
        if math.isclose(high / low, 10):
            for epochs in args.pretrain_epochs:
                first = f"student_{args.distill_teachers[0]}"  # the default mode's student
                student = pick(source, low, f"simclr-e{epochs}", first)
                teacher = pick(source, low, f"simclr-e{epochs}", "teacher")
                baseline = pick(source, high, "supervised")
                if student and baseline:
                    met = statistics.mean(student) >= statistics.mean(baseline)
                    print(f"  goal (e{epochs}): student at {low:g} {_cell(student)} vs "
                          f"supervised at {high:g} {_cell(baseline)}: "
                          f"{'met' if met else 'not met'}; student vs teacher "
                          f"{_cell(student)} vs {_cell(teacher)}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
