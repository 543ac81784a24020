"""``slm-harness locust [LOCUST OPTIONS]``: Locust itself with the harness's options registered
before it parses its command line.

Plain ``locust -f locustfiles/tgi.py --help`` prints its help before it reads the locustfile, so
it cannot list options a locustfile adds; ``slm-harness locust -f locustfiles/tgi.py --help``
does. Anything else runs exactly as ``locust ...`` would.
"""

from __future__ import annotations

import argparse
import sys


def _locust(args: argparse.Namespace) -> int:
    import locust  # noqa: F401 - gevent's monkey patching first
    from locust.main import main

    from harness.loadgen.plugin import register_options

    register_options()
    sys.argv = ["locust", *args.locust_args]
    main()
    return 0


def register(sub) -> None:
    p = sub.add_parser("locust", prefix_chars="+", add_help=False,
                       help="Locust with the harness's options (-f locustfiles/tgi.py --help "
                            "lists them)")
    p.add_argument("locust_args", nargs=argparse.REMAINDER, metavar="LOCUST_OPTIONS")
    p.set_defaults(func=_locust)
