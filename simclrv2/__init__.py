"""SimCLRv2: big self-supervised models are strong semi-supervised learners.

The method as a plain PyTorch library. It never imports kfp: the Kubeflow components wrap
these functions, so the same code runs from the CLI, in tests, in kfp.local and in a cluster.
"""

__version__ = "0.1.0"
