"""The kNN monitor of pretraining: representation quality after every N epochs, without
training on a single label (pretrain.knn; simclrv2/evaluation/knn.py).

Rank 0 encodes the labeled split (the memory) and the test split (the queries) with the
encoder being trained, in eval mode, and records the weighted-kNN top-1 in the step's history
(plotted with the loss curves) and as the simclrv2_knn_top1_ratio metric. The other ranks wait.
The global random state is saved and restored around it, so a run with the monitor trains
exactly as one without.
"""

import torch
import torch.distributed as dist

from simclrv2.config.run_config import RunConfig
from simclrv2.distributed.context import DistributedContext
from simclrv2.evaluation.features import labeled_and_test_features
from simclrv2.evaluation.knn import knn_accuracy
from simclrv2.shards.manifest import DatasetManifest
from simclrv2.storage.s3_client import S3Settings
from simclrv2.training.checkpoint import capture_rng_state, restore_rng_state


class KnnMonitor:
    def __init__(
        self, config: RunConfig, manifest: DatasetManifest, context: DistributedContext,
        s3_settings: S3Settings | None, epochs: int, bf16: bool, say=print,
    ):  # fmt: skip
        self.settings, self.config, self.manifest = config.pretrain.knn, config, manifest
        self.context, self.s3_settings, self.epochs = context, s3_settings, epochs
        self.bf16, self.say = bf16, say
        self.num_classes = len(manifest.class_names)

    def due(self, epoch: int) -> bool:
        every = self.settings.every_epochs
        return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == self.epochs)

    def __call__(self, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        """{"knn_top1": accuracy} after a due epoch (on rank 0), else {}."""
        if not self.due(epoch):
            return {}
        values = {}
        if self.context.is_main:
            rng = capture_rng_state()
            try:
                values = {"knn_top1": self._measure(getattr(model, "module", model).encoder)}
            finally:
                restore_rng_state(rng)
            # The last pass can be cut short (the reference's step count), so name it by
            # what it measures: the final weights.
            when = "end of training" if epoch + 1 == self.epochs else f"epoch {epoch + 1}"
            self.say(f"[pretrain] {when}: kNN top-1 {values['knn_top1']:.2%} "
                     f"(k {self.settings.k}, T {self.settings.temperature})")  # fmt: skip
        if self.context.distributed:
            dist.barrier()
        return values

    def _measure(self, encoder: torch.nn.Module) -> float:
        (train, train_labels), (test, test_labels) = labeled_and_test_features(
            encoder, self.manifest, self.config, self.context.device, self.bf16,
            self.s3_settings,
        )  # fmt: skip
        settings = self.settings
        return knn_accuracy(train, train_labels, test, test_labels, self.num_classes,
                            settings.k, settings.temperature)  # fmt: skip
