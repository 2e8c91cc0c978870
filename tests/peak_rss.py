"""Run a command and write its peak resident memory (bytes) to a file:

    python tests/peak_rss.py PEAK_FILE -- COMMAND [ARGS...]

Exits with the command's exit status. Why a separate process: Linux keeps a process's peak
RSS (ru_maxrss) across exec and starts it at the size of the process it was forked from, so
a command forked straight from a test process (hundreds of MiB of torch) reports at least
that much. Forked from this small interpreter instead, the figure is the command's own.
"""

import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python tests/peak_rss.py PEAK_FILE -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    process = subprocess.Popen(argv[2:])
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    Path(argv[0]).write_text(str(usage.ru_maxrss * 1024))  # Linux reports KiB
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
