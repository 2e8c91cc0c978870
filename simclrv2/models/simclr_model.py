"""The two networks of SimCLRv2 and the path between them.

- ContrastiveModel: encoder f + projection head g, trained with NT-Xent (pretraining).
- Classifier: encoder + the first k projection layers + a linear classifier; built from a
  pretrained ContrastiveModel for fine-tuning (the paper fine-tunes from k=1, the middle of
  the head; the reference allows any k from 0, the encoder output, to the whole head) and
  used as teacher and student for distillation; with k=0 and a fresh encoder it is the
  supervised baseline.
"""

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from simclrv2.models.projection_head import ProjectionHead
from simclrv2.models.resnet import EncoderConfig, ResNet


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a ContrastiveModel; stored with checkpoints to rebuild the model."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_proj_layers: int = 3
    proj_out_dim: int = 128

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        values = dict(values)
        return cls(encoder=EncoderConfig(**values.pop("encoder")), **values)


class ContrastiveModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = ResNet(config.encoder)
        self.projection_head = ProjectionHead(
            self.encoder.output_dim, config.num_proj_layers, config.proj_out_dim
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) -> projections z (N, proj_out_dim), not yet normalised."""
        return self.projection_head(self.encoder(images))


class Classifier(nn.Module):
    """Encoder + head[:k] + linear classifier (zero-initialised: training starts from the
    pretrained features with uniform predictions)."""

    def __init__(
        self,
        encoder_config: EncoderConfig,
        num_classes: int,
        proj_layers: int = 0,
        num_proj_layers: int = 3,
        zero_init_classifier: bool = True,
        proj_out_dim: int = 128,
    ):
        super().__init__()
        if not 0 <= proj_layers <= num_proj_layers:
            raise ValueError(
                f"fine-tune layer k={proj_layers} must be between 0 (the encoder output) and "
                f"{num_proj_layers} (the whole projection head); the paper uses k=1"
            )
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.encoder = ResNet(encoder_config)
        self.num_proj_layers = num_proj_layers
        self.proj_out_dim = proj_out_dim
        width = self.encoder.output_dim
        self.projection_layers = nn.ModuleList(
            ProjectionHead(width, num_proj_layers, proj_out_dim).layers[:proj_layers]
        )
        # Hidden layers are as wide as the encoder output; the last one is proj_out_dim wide.
        features = proj_out_dim if proj_layers == num_proj_layers else width
        self.classifier = nn.Linear(features, num_classes)
        if zero_init_classifier:
            nn.init.zeros_(self.classifier.weight)
        else:
            nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    @classmethod
    def from_pretrained(
        cls,
        model: ContrastiveModel,
        num_classes: int,
        proj_layers: int = 1,
        zero_init_classifier: bool = True,
    ) -> "Classifier":
        """Fine-tuning network from a pretrained model: copies the encoder and head[:k]."""
        config = model.config
        classifier = cls(
            config.encoder,
            num_classes,
            proj_layers,
            config.num_proj_layers,
            zero_init_classifier,
            config.proj_out_dim,
        )
        classifier.encoder.load_state_dict(model.encoder.state_dict())
        for target, source in zip(
            classifier.projection_layers, model.projection_head.layers, strict=False
        ):
            target.load_state_dict(source.state_dict())
        return classifier

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.encoder(images)
        for layer in self.projection_layers:
            x = layer(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> class logits (N, num_classes)."""
        return self.classifier(self.features(images))
