"""Re-pins images/constraints.txt: what pip would install for the project (with its kfp extra)
and the pinned torch/torchvision, resolved for this Python, as exact `name==version` lines."""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HEADER = """\
# Exact versions of everything the images install (used as pip constraints). Regenerate with
# `make constraints` after changing pyproject.toml or the torch pins in the Makefile.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--torch", required=True)
    parser.add_argument("--torchvision", required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--dry-run",
                "--ignore-installed",
                "--report",
                str(report),
                f"torch=={args.torch}",
                f"torchvision=={args.torchvision}",
                f"{root}[kfp]",
            ],
            check=True,
        )
        installs = json.loads(report.read_text())["install"]
    pins = sorted(
        (item["metadata"]["name"], item["metadata"]["version"])
        for item in installs
        if item["metadata"]["name"] != "simclrv2-kfp"
    )
    lines = [f"{name}=={version}" for name, version in sorted(pins, key=lambda p: p[0].lower())]
    args.output.write_text(HEADER + "\n".join(lines) + "\n")
    print(f"pinned {len(lines)} packages in {args.output}")


if __name__ == "__main__":
    main()
