"""The retry settings of one step, checked against what Argo does with them.

KFP turns a task's retry policy into an Argo retryStrategy {limit, backoff: {duration, factor,
maxDuration}} (KFP 2.17 backend, argocompiler/container.go). Argo v4.0.5 (processNodeRetries):

- counts backoff.maxDuration from the start of the FIRST attempt, gives every retry pod that
  deadline, and gives up ("Backoff would exceed max duration limit") when the next backoff
  would end after it;
- waits duration * factor**n before retry n + 1 (n from 0);
- reads the factor as an integer: KFP sends the float's text ("1.5"), which makes the node
  error when it is retried.

The kfp SDK always writes a max duration (3600s when unset), so a step that may run for hours
needs a window that covers all its attempts; the default here is computed from the timeout.
"""

import re

#: Added per attempt to the default window. A step's timeout (the pod's activeDeadlineSeconds)
#: starts when the kubelet takes the pod; the window also runs while the pod waits for a node
#: (a GPU node being scaled up, say) and between an attempt's end and the controller creating
#: the next pod. Five minutes each is small next to any real timeout.
MARGIN_PER_ATTEMPT_S = 300

#: What the kfp SDK writes when a retry policy has no max duration.
KFP_DEFAULT_MAX_DURATION_S = 3600

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")


def parse_seconds(value, where: str, key: str) -> int:
    """Whole seconds from 120, "120", "120s", "2m", "2h", "1d" or "1w"."""
    if isinstance(value, bool):
        match = None
    elif isinstance(value, int):
        if value >= 0:
            return value
        match = None
    else:
        match = _DURATION.fullmatch(str(value).strip())
    if match is None:
        raise ValueError(
            f"{where}: {key} {value!r} is not a duration; use whole seconds (7200) or a whole "
            f"number with one unit of {'/'.join(_UNITS)} (120s, 30m, 2h, 7d)"
        )
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _backoff_factor(value, where: str) -> int:
    factor = None
    if not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
        if number is not None and number.is_integer() and number >= 1:
            factor = int(number)
    if factor is None:
        raise ValueError(
            f"{where}: backoff_factor {value!r} must be a whole number >= 1 (e.g. 2): Argo "
            f"reads the backoff factor as an integer, and a retry with a factor such as 1.5 "
            f"ends the step with an error instead of retrying it"
        )
    return factor


def backoffs(duration_s: int, factor: int, retries: int) -> list[int]:
    """The waits before retries 1..retries: duration * factor**n, n from 0."""
    return [duration_s * factor**n for n in range(retries)]


def minimum_window(retries: int, timeout_s: int, duration_s: int, factor: int) -> int:
    """Every attempt running to its timeout, plus every backoff between them."""
    return (retries + 1) * timeout_s + sum(backoffs(duration_s, factor, retries))


def retry_policy(settings: dict, where: str) -> dict | None:
    """The arguments of PipelineTask.set_retry for one step's settings, or None without
    retries. `where` names the profile and step in error messages."""
    retries = settings.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"{where}: retries {retries!r} must be a whole number >= 0")
    if retries == 0:
        return None
    duration = parse_seconds(settings.get("backoff_duration", 60), where, "backoff_duration")
    factor = _backoff_factor(settings.get("backoff_factor", 2), where)
    timeout = settings.get("timeout_seconds")
    explicit = settings.get("backoff_max_duration")
    if timeout is None:
        if explicit is None:
            raise ValueError(
                f"{where}: retries: {retries} needs timeout_seconds (or an explicit "
                f"backoff_max_duration). KFP always gives Argo a retry window, "
                f"{KFP_DEFAULT_MAX_DURATION_S}s when the profile sets none, counted from the "
                f"start of the first attempt: an attempt still running when it ends is killed "
                f"and nothing is retried after it. Set timeout_seconds to the longest one "
                f"attempt may take (the window is then computed from it), or set "
                f"backoff_max_duration to cover all {retries + 1} attempts and their backoffs"
            )
        max_duration = parse_seconds(explicit, where, "backoff_max_duration")
    else:
        timeout_s = parse_seconds(timeout, where, "timeout_seconds")
        minimum = minimum_window(retries, timeout_s, duration, factor)
        if explicit is None:
            max_duration = minimum + (retries + 1) * MARGIN_PER_ATTEMPT_S
        else:
            max_duration = parse_seconds(explicit, where, "backoff_max_duration")
            if max_duration < minimum:
                waits = " + ".join(f"{b}s" for b in backoffs(duration, factor, retries))
                raise ValueError(
                    f"{where}: backoff_max_duration {max_duration}s is too short: Argo counts "
                    f"it from the start of the first attempt, so it must hold {retries + 1} "
                    f"attempts of timeout_seconds {timeout_s}s plus the backoffs ({waits}), "
                    f"at least {minimum}s. Raise it to {minimum}s or more, or remove it to "
                    f"get the default ({minimum + (retries + 1) * MARGIN_PER_ATTEMPT_S}s)"
                )
    return {
        "num_retries": retries,
        "backoff_duration": f"{duration}s",
        "backoff_factor": float(factor),
        "backoff_max_duration": f"{max_duration}s",
    }
