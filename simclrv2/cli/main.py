"""The `simclrv2` command line: the parser of every command, and the entry point.

Each command lives in its own module here, a thin layer over a library function, and
registers its parser with `register(subparsers)`."""

import argparse
import sys

from simclrv2 import __version__
from simclrv2.cli import (
    distill,
    evaluate,
    finetune,
    import_tf,
    params,
    pipeline,
    pretrain,
    pseudolabel,
    quickstart,
    shard,
    verify,
)
from simclrv2.cli.error_report import report
from simclrv2.errors import INTERRUPTED_EXIT, USAGE_EXIT

# In the order `simclrv2 --help` lists them.
COMMANDS = (quickstart, params, shard, verify, import_tf, pretrain, finetune, pseudolabel, distill,
            evaluate, pipeline)  # fmt: skip

EXAMPLES = """examples:
  simclrv2 quickstart                     # the whole pipeline on 1% of Fashion-MNIST labels
  simclrv2 shard --source fashion-mnist --output s3://datasets/fmnist --label-fraction 0.01
  simclrv2 verify s3://datasets/fmnist
  simclrv2 quickstart --set pretrain.optimizer.epochs=10 --label-fraction 0.1
  simclrv2 params --depth 152 --width 3 --sk-ratio 0.0625
"""


class _Parser(argparse.ArgumentParser):
    """argparse with the error first: `simclrv2 shard: error: ...`, then how to get help.

    argparse prints the usage before the error; a user (and a log scanner) reads the first
    line, so it should say what is wrong. Sub-command parsers inherit this class.
    """

    def error(self, message: str):
        self.exit(
            USAGE_EXIT,
            f"{self.prog}: error: {message}\n{self.format_usage()}"
            f"run `{self.prog} --help` for every option\n",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="simclrv2",
        description="SimCLRv2: big self-supervised models are strong semi-supervised learners.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback too")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("simclrv2: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except Exception as error:  # one line, no traceback (unless --debug), exit 2 or 1
        return report(error, args.debug)
