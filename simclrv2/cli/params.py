"""`simclrv2 params`: the parameter count of a ResNet configuration."""


def register(subparsers) -> None:
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
