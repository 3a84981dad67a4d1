"""`kubetune-operator`: run the FineTuneJob operator (settings from KUBETUNE_* variables).

    KUBECONFIG=... kubetune-operator            # standalone, all namespaces, JSON logs
    kubetune-operator --print-rbac              # the ClusterRole it needs, as YAML

Peering is off unless `KUBETUNE_PEERING_NAME` is set (kopf's peering CRDs must then exist);
the liveness endpoint is `http://KUBETUNE_LIVENESS_BIND:KUBETUNE_LIVENESS_PORT/healthz`, and
Prometheus metrics are at `/metrics` on the same server (health_server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys

import kopf
import yaml

from kubetune_operator import rbac
from kubetune_operator.health_server import HealthServer
from kubetune_operator.kopf_restarts import run_restarting
from kubetune_operator.metrics import OperatorMetrics
from kubetune_operator.settings import OperatorSettings


def _configure_logging(settings: OperatorSettings) -> None:
    fmt = kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=fmt,
    )
    logging.getLogger("kubetune").setLevel(settings.log_level)
    # kopf reports every handled watch event at INFO; that is noise at hundreds of jobs.
    logging.getLogger("kopf.objects").setLevel(
        logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    )


async def run(settings: OperatorSettings) -> None:
    """Run the operator until SIGINT/SIGTERM (kopf_restarts.py: again after a watch failure)."""
    from kubetune_operator import handlers  # registers the kopf handlers

    metrics = OperatorMetrics()
    handlers.configure(settings, metrics)
    health = HealthServer(handlers.probe, metrics)
    if settings.liveness_port is not None:
        await health.start(settings.liveness_bind, settings.liveness_port)

    async def run_once() -> None:
        await kopf.operator(
            standalone=settings.peering_name is None,
            peering_name=settings.peering_name,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
        )

    try:
        await run_restarting(run_once, handlers.starts)  # a failed watch: run kopf again
    finally:
        await health.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune-operator", description=__doc__.split("\n")[0])
    parser.add_argument("--print-rbac", action="store_true", help="print the ClusterRole and exit")
    parser.add_argument("--print-settings", action="store_true", help="print settings and exit")
    args = parser.parse_args(argv)
    settings = OperatorSettings()
    if args.print_rbac:
        print(yaml.safe_dump(rbac.cluster_role(peering=settings.peering_name is not None)))
        return 0
    if args.print_settings:
        print(settings.model_dump_json(indent=2))
        return 0
    _configure_logging(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
