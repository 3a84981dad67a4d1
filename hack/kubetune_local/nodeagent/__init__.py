"""The kubetune node agent: a small stand-in for the kubelet on the local cluster.

It registers a Node (the machine's NVIDIA GPUs, or fake ones), keeps it Ready, runs the pods
bound to it as local processes in the project's Python environment under their security
context, reports their status and serves their logs. Modules: `config` (flags), `node` (Node
object), `devices` (GPUs and their allocation), `agent` (pod watch and dispatch, re-adoption
after a restart), `pod` (one pod's lifecycle), `container` (one container's launch spec),
`security` (securityContext rules), `process` and `shim` (one container run, watched by a
shim that outlives the agent), `launch` and `linux` (the container's mount namespace, user
and restrictions), `envvars`, `volumes` and `ownership` (fsGroup), `status` (pure rules),
`cgroups`, `logserver`, `kube` (API calls); claims are bound by `kubetune_local.provisioner`,
run in the agent.

`main` imports lazily so `python -m kubetune_local.nodeagent.launch` starts fast.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """Console entry point `kubetune-node-agent`."""
    from kubetune_local.nodeagent.agent import main as run

    run(argv)
