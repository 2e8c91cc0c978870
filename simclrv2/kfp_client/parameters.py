"""Pipeline parameters given on the command line as KEY=VALUE."""

import argparse
import re
from typing import Any

_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_param(text: str) -> tuple[str, Any]:
    """'key=value' -> (key, value), the value read as a YAML scalar: 3 -> int, 0.1 -> float,
    true -> bool, anything else -> str. 1e-3 is a float too (YAML 1.1 reads it as a string)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param {text!r} must look like KEY=VALUE")
    if _EXPONENT_NUMBER.fullmatch(raw.strip()):
        return key, float(raw)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if not isinstance(value, (str, int, float, bool)):
        # Lists, mappings, null and dates are not scalars a pipeline parameter takes as typed;
        # pass the text through unchanged.
        value = raw
    return key, value
