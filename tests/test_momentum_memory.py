"""The optional momentum memory: EMA encoder, FIFO queue, extra negatives, resumable."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simclrv2.config.loading import from_dict
from simclrv2.config.run_config import RunConfig
from simclrv2.datasets.label_subset_spec import LabelSubsetSpec
from simclrv2.objectives.momentum_memory import MomentumMemory
from simclrv2.objectives.nt_xent import nt_xent_loss
from simclrv2.shards.shard_dataset import ShardRequest, shard_dataset
from simclrv2.steps.model_artifact import load_model
from simclrv2.steps.pretrain import pretrain
from simclrv2.storage.object_store import ObjectStore
from simclrv2.training.checkpoint import CheckpointStore
from tests.test_pretrain_step import TINY


def test_extra_negatives_enter_every_denominator():
    torch.manual_seed(0)
    z = torch.randn(6, 5, dtype=torch.float64)
    queue = F.normalize(torch.randn(4, 5, dtype=torch.float64), dim=1)
    plain, _ = nt_xent_loss(z, 0.5)
    empty, _ = nt_xent_loss(z, 0.5, extra_negatives=queue[:0])
    assert empty.item() == pytest.approx(plain.item(), rel=1e-12)

    # Straightforward: each anchor's softmax over the 2N-1 other views plus the K queued ones.
    h = F.normalize(z, dim=1)
    n = 3
    total = 0.0
    for k in range(6):
        positive = (k + n) % 6
        sims = [h[k] @ h[j] / 0.5 for j in range(6) if j != k] + [h[k] @ q / 0.5 for q in queue]
        total += math.log(sum(math.exp(s) for s in sims)) - (h[k] @ h[positive] / 0.5).item()
    with_queue, _ = nt_xent_loss(z, 0.5, extra_negatives=queue)
    assert with_queue.item() == pytest.approx(total / n, rel=1e-10)
    assert with_queue.item() > plain.item()


def test_ema_update_and_fifo_queue():
    online = nn.Linear(3, 2)
    memory = MomentumMemory(online, momentum=0.9, queue_size=5, dim=2)
    before = memory.encoder.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    memory.update(online, torch.arange(6.0).reshape(3, 2))
    torch.testing.assert_close(memory.encoder.weight, 0.9 * before + 0.1 * online.weight)
    assert memory.filled == 3 and memory.position == 3
    memory.update(online, torch.full((4, 2), 9.0))  # wraps around: 2 at the end, 2 at the start
    assert memory.filled == 5 and memory.position == 2
    assert memory.queue[:, 0].tolist() == [9.0, 9.0, 4.0, 9.0, 9.0]
    assert not memory.encoder.weight.requires_grad

    copy = MomentumMemory(nn.Linear(3, 2), 0.9, 5, 2)
    copy.load_state_dict(memory.state_dict())
    torch.testing.assert_close(copy.queue, memory.queue)
    torch.testing.assert_close(copy.encoder.weight, memory.encoder.weight)
    assert (copy.filled, copy.position) == (5, 2)


@pytest.mark.slow
def test_pretrain_with_memory_resumes_to_the_same_weights(tmp_path):
    data = tmp_path / "data"
    shard_dataset(ShardRequest("fashion-mnist", str(data), LabelSubsetSpec(per_class=1),
                               max_samples_per_shard=48, sample_limit=128))  # fmt: skip
    settings = {**TINY, "data": {**TINY["data"], "dataset": str(data), "num_workers": 0},
                "pretrain": {**TINY["pretrain"], "moco": {"enabled": True, "queue_size": 80}},
                "runtime": {**TINY["runtime"], "checkpoint_every_steps": 2}}  # fmt: skip
    config = from_dict(RunConfig, settings)
    # 128 / 32 = 4 steps per pass, 128 x 2 // 32 + 1 = 9 steps; the queue (80) fills after 2.5
    # steps of 64 keys.
    straight = pretrain(config, str(tmp_path / "straight"), print_fn=lambda *_: None)
    assert straight.steps == 9
    pretrain(config, str(tmp_path / "resumed"), max_steps=3, print_fn=lambda *_: None)
    state = CheckpointStore(str(tmp_path / "resumed" / "checkpoints")).load()
    assert state["extra"]["filled"] == 80 and state["step"] == 3
    resumed = pretrain(config, str(tmp_path / "resumed"), print_fn=lambda *_: None)
    assert resumed.resumed_from.endswith("step-000000003.pt")
    store = ObjectStore()
    a, _ = load_model(store, straight.model_uri)
    b, _ = load_model(store, resumed.model_uri)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
