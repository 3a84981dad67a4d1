"""The kubetune node agent: a small stand-in for the kubelet on the local cluster.

It registers a Node (GPUs included), keeps it Ready, runs the pods bound to it as local
processes in the project's Python environment, reports their status and serves their logs.
Modules: `config` (flags), `node` (Node object), `agent` (pod watch and dispatch), `pod`
(one pod's lifecycle), `process` and `launch` (one container process in its own mount
namespace), `envvars`, `volumes`, `status` (pure rules), `cgroups`, `logserver`,
`kube` (API calls); claims are bound by `kubetune_local.provisioner`, run in the agent.

`main` imports lazily so `python -m kubetune_local.nodeagent.launch` starts fast.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Console entry point `kubetune-node-agent`."""
    from kubetune_local.nodeagent.agent import main as run

    run(argv)
