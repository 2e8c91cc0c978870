"""Library-side glue the Kubeflow components call (no kfp import here)."""
