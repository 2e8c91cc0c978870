"""The `simclrv2` command line. Each subcommand is a thin layer over a library function."""

import argparse
import dataclasses
import sys
import typing

from simclrv2 import __version__

EXAMPLES = """examples:
  simclrv2 quickstart                          # pretrain + fine-tune on 1% of Fashion-MNIST
  simclrv2 quickstart --pretrain-epochs 5 --label-fraction 0.1
  simclrv2 params --depth 152 --width 3 --sk-ratio 0.0625
"""


def _add_field_argument(parser: argparse.ArgumentParser, field: dataclasses.Field) -> None:
    """--some-name for a dataclass field; `X | None` fields default to None (automatic)."""
    flag = "--" + field.name.replace("_", "-")
    kind = next((t for t in typing.get_args(field.type) if t is not type(None)), field.type)
    shown = "automatic" if field.default is None else field.default
    if kind is bool:
        action = argparse.BooleanOptionalAction
        parser.add_argument(flag, action=action, default=field.default, help=f"default {shown}")
    else:
        parser.add_argument(flag, type=kind, default=field.default, help=f"default {shown}")


def _add_quickstart(subparsers) -> None:
    from simclrv2.quickstart import QuickstartConfig

    parser = subparsers.add_parser(
        "quickstart",
        help="SimCLRv2 vs supervised on 1%% of Fashion-MNIST's labels (minutes on a CPU)",
        description="Pretrain on Fashion-MNIST without labels, fine-tune on a class-balanced "
        "label subset, and compare with supervised training on the same labels.",
    )
    for field in dataclasses.fields(QuickstartConfig):
        _add_field_argument(parser, field)
    parser.set_defaults(handler=_run_quickstart)


def _run_quickstart(args) -> int:
    from simclrv2.quickstart import QuickstartConfig, run_quickstart

    names = {field.name for field in dataclasses.fields(QuickstartConfig)}
    config = QuickstartConfig(**{k: v for k, v in vars(args).items() if k in names})
    run_quickstart(config)
    return 0


def _add_params(subparsers) -> None:
    parser = subparsers.add_parser(
        "params",
        help="count encoder parameters of a ResNet configuration without allocating it",
    )
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--sk-ratio", type=float, default=0.0)
    parser.add_argument("--cifar-stem", action="store_true")
    parser.set_defaults(handler=_run_params)


def _run_params(args) -> int:
    from simclrv2.models.parameter_count import encoder_parameter_count
    from simclrv2.models.resnet import EncoderConfig

    config = EncoderConfig(args.depth, args.width, args.sk_ratio, args.cifar_stem)
    count = encoder_parameter_count(config)
    sk = f"+SK({args.sk_ratio:g})" if args.sk_ratio else ""
    print(f"ResNet-{args.depth} {args.width:g}x{sk}: {count:,} parameters ({count / 1e6:.1f}M)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simclrv2",
        description="SimCLRv2: big self-supervised models are strong semi-supervised learners.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_quickstart(subparsers)
    _add_params(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"simclrv2: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
