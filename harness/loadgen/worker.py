"""A Locust worker process for ``run_cell(processes=N)``: ``python -m harness.loadgen.worker``."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.loadgen.worker")
    ap.add_argument("--master-host", default="127.0.0.1")
    ap.add_argument("--master-port", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from locust.env import Environment
    from locust.event import Events

    from harness.loadgen.users import ClosedLoopUser, OpenLoopUser
    from harness.loadgen.workerside import setup_worker

    env = Environment(user_classes=[ClosedLoopUser, OpenLoopUser], events=Events())
    runner = env.create_worker_runner(args.master_host, args.master_port)
    setup_worker(env)
    runner.greenlet.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
