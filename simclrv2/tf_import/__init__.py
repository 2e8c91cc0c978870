"""Import the released SimCLRv2 TensorFlow checkpoints (TF1 and TF2) without TensorFlow."""
