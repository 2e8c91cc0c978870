"""`python -m simclrv2.cli STEP ...`: what torchrun and the step images run."""

import sys

from simclrv2.cli.main import main

sys.exit(main())
