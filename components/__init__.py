"""Kubeflow Pipelines components: one folder each, thin typed wrappers over simclrv2 steps.

Every component is a lightweight Python component whose body imports the library and calls
one step function, so the same definition runs in our image on a cluster (BASE_IMAGE, or the
profile's image set per task) and in the current environment under kfp.local. Data stays on
S3: Dataset and Model artifacts are small pointers to where the step wrote (see
simclrv2/pipeline_support/artifact_pointer.py).

Components are declared with install_kfp_package=False: the image already holds the pinned kfp
(images/constraints.txt), so a step starts without pip and works on clusters with no PyPI.
"""

import os

# The image the steps run in on a cluster; the pipeline sets each task's image from the
# profile, this is only the fallback.
BASE_IMAGE = os.environ.get("SIMCLRV2_IMAGE", "simclrv2:0.1.0-cpu")
