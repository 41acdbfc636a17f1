"""`jaxdeid train NETWORK`: train one network through the shared loop.

One sub-command per kind in the component registry (`jaxdeid.components.COMPONENTS`):
its help line, its ``--arch`` choices and its extra flags come from the record, and
it runs the record's ``fit(config, args)`` and prints the report it returns. The exit
status is the command's: 1 when training ended on a non-finite loss.
"""

from ..components import COMPONENTS
from .common import EXIT_FAILED, EXIT_OK, add_config_flags, config_from_args


def register(subparsers):
    p = subparsers.add_parser("train", help="train a network (resumes from its latest checkpoint)")
    sub = p.add_subparsers(dest="network", metavar="NETWORK", required=True)
    for kind, component in sorted(COMPONENTS.items()):
        q = sub.add_parser(kind, help=component.description)
        add_config_flags(q)
        if component.archs:
            default = component.default_arch
            q.add_argument("--arch", required=default is None, default=default, choices=component.archs,
                           help=f"architecture: {', '.join(component.archs)}"
                                + (f" (default {default})" if default else ""))
        for flag, kwargs in component.flags:
            q.add_argument(flag, **kwargs)
        q.set_defaults(func=_runner(component.fit))


def _runner(fit):
    def run(args) -> int:
        report = fit(config_from_args(args), args)
        print(report.summary())
        return EXIT_OK if report.finite else EXIT_FAILED
    return run
