"""Where the client looks for the API server and token, and the names it uses by default."""

HOST_ENV = "KFP_HOST"


KFP_HOST_ENV = "KF_PIPELINES_ENDPOINT"  # kfp.Client's own variable, used when KFP_HOST is unset


TOKEN_ENV = "KF_PIPELINES_TOKEN"


DEFAULT_PIPELINE_NAME = "simclrv2"


DEFAULT_EXPERIMENT = "Default"  # the experiment every KFP installation has
