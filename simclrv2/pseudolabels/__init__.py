"""The pseudo-label step's parts: the teacher, image shards read in order, the sidecar
shards it writes, the records that mark a shard done, and what identifies a pseudo-labelling.
The step itself (which shards, progress, publishing) is simclrv2/steps/pseudolabel.py."""
