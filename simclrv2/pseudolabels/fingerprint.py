"""What identifies a pseudo-labelling: the images, the teacher's weights, the preprocessing and
the sidecar format."""

import hashlib
import json

from simclrv2.config.run_config import DataSettings
from simclrv2.shards.manifest import DatasetManifest

FORMAT = 1  # of the sidecars; part of the fingerprint


def pseudolabel_fingerprint(images: DatasetManifest, teacher: str, data: DataSettings) -> str:
    """Same images, same teacher weights, same preprocessing = same pseudo-labels."""
    inputs = {
        "format": FORMAT,
        "images": images.fingerprint,
        "teacher": teacher,
        "image_size": data.image_size,
        "image_mode": data.image_mode,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
