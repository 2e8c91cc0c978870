"""Multi-node training steps on Kubeflow Trainer: a TrainJob per step, created and watched
by a thin launcher (the KFP task), with a local-process stand-in for tests and laptops."""
