"""The SimCLRv2 Kubeflow pipeline: the DAG, per-step placement profiles, the compiler."""
