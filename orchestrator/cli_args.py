"""What ``testbed`` takes on its command line: the parser that reports a bad flag in one line, the
checked types of its numeric flags, and the deployment flags with the backends they apply to."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn, TypeVar

from orchestrator.deploy import DEFAULT_IMAGE, K8S_NAMESPACE, DeployOptions
from orchestrator.deploy.k8s_render import OVERLAYS
from orchestrator.run import DEPLOY_BACKENDS

MAX_SEED = 2**64 - 1  # a seed is mixed as a 64-bit word (emulators.kernel.rng)
# virtual seconds per wall second: at the low end a paced window (PACE_TICK_S of wall time) is still
# 50 ps of virtual time, more than the 1 ps it must be; above the high end pacing holds nothing back
PACE_RANGE = (1e-9, 1e6)
WINDOW_TIMEOUT_RANGE = (0.1, 86_400.0)  # seconds: less is no time to answer; more is a day of a silent host
MAX_TAIL = 10**9  # lines: more than any container's log

Number = TypeVar("Number", int, float)


class Parser(argparse.ArgumentParser):
    """Bad flags get one ``error:`` line naming the flag, like every other bad input (argparse would
    add its usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message.removeprefix('argument ')} (see `{self.prog} --help`)\n")


def shown(text: str) -> str:
    """A value from the command line, quoted as it is reported back: escaped, and cut if it is long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def checked(parse: Callable[[str], Number], low: Number, high: Number, not_a: str,
            out_of_range: str) -> Callable[[str], Number]:
    """An argparse type: ``parse`` the text and keep it within ``low`` and ``high``. Its two messages
    (text that does not parse, a value out of range) get the text, as shown back, for ``{value}``."""

    def value_of(text: str) -> Number:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(not_a.format(value=shown(text))) from None
        if not low <= value <= high:  # nan and inf fail too
            raise argparse.ArgumentTypeError(out_of_range.format(value=shown(text)))
        return value

    return value_of


def _ranged(what: str, bounds: tuple[float, float], unit: str) -> Callable[[str], float]:
    low, high = bounds
    return checked(float, low, high, f"{{value}} is not a number ({unit})",
                   f"{what} must be from {low:g} to {high:g} {unit}, not {{value}}")


seed = checked(int, 0, MAX_SEED, "{value} is not an integer seed",
               "the seed must be >= 0 and <= 2**64 - 1, not {value}")
window_timeout = _ranged("the timeout", WINDOW_TIMEOUT_RANGE, "seconds")
pace = _ranged("the pace", PACE_RANGE, "virtual seconds per wall second")
line_count = checked(int, 1, MAX_TAIL, "{value} is not a number of lines",
                     f"the number of lines must be from 1 to {MAX_TAIL}, not {{value}}")


def add_deploy_arguments(parser: argparse.ArgumentParser, k8s_only: bool) -> None:
    """--image, --namespace and --overlay: for `run` (the latter two with --backend k8s) and `render`."""
    with_k8s = "with --backend k8s: " if k8s_only else ""
    parser.add_argument("--image", default=None,
                        help=f"the device host image (default {DEFAULT_IMAGE}; `make image` builds it)")
    parser.add_argument("--namespace", default=None, help=f"{with_k8s}the namespace (default {K8S_NAMESPACE})")
    parser.add_argument("--overlay", choices=list(OVERLAYS), default=None,
                        help=f"{with_k8s}the k8s/ kustomization to build on (default kind)")


def deploy_options(args: argparse.Namespace, backend: str) -> DeployOptions:
    """The deployment flags as options; ValueError naming a flag that does not apply to ``backend``."""
    if getattr(args, "docker_network", None) is not None and backend != "docker":
        raise ValueError("--docker-network applies to --backend docker only")
    if backend not in DEPLOY_BACKENDS and args.image is not None:
        raise ValueError("--image applies to --backend docker or k8s only")
    if backend != "k8s" and (args.namespace is not None or args.overlay is not None):
        raise ValueError("--namespace and --overlay apply to --backend k8s only")
    defaults = DeployOptions()
    return DeployOptions(image=args.image or defaults.image,
                         docker_network=getattr(args, "docker_network", None) or defaults.docker_network,
                         namespace=args.namespace or defaults.namespace, overlay=args.overlay or defaults.overlay)
