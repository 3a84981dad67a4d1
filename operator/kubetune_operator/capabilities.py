"""What the API server's batch/v1 Job supports, decided once from its version (pure).

- `podFailurePolicy`: beta and on by default from 1.26 (alpha, off, in 1.25).
- `suspend`: beta and on by default from 1.22 (alpha in 1.21); Kueue needs it.
- Indexed Jobs (`completionMode: Indexed`, multi-node runs): beta and on by default from
  1.22 (alpha, off, in 1.21: the server would drop the field and run an ordinary Job).
- `ttlSecondsAfterFinished`: on by default from 1.21 (earlier only with the feature gate,
  which the local cluster turns on; an unknown field is dropped, never an error).

Each can be forced on or off with the operator settings (`KUBETUNE_USE_POD_FAILURE_POLICY`,
`KUBETUNE_USE_SUSPEND`, `KUBETUNE_USE_INDEXED_JOBS`: auto, true or false).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kubetune_operator.settings import OperatorSettings


@dataclass(frozen=True)
class ServerCapabilities:
    """Job features the operator may use on this cluster."""

    version: tuple[int, int] = (1, 30)
    pod_failure_policy: bool = True
    suspend: bool = True
    indexed_jobs: bool = True
    git_version: str = ""

    @property
    def label(self) -> str:
        return self.git_version or f"v{self.version[0]}.{self.version[1]}"


def parse_version(info: dict[str, Any]) -> tuple[int, int]:
    """(major, minor) from a /version response; minor may carry a suffix such as `27+`."""
    major = re.match(r"\d+", str(info.get("major", "")))
    minor = re.match(r"\d+", str(info.get("minor", "")))
    if major and minor:
        return int(major.group()), int(minor.group())
    found = re.match(r"v?(\d+)\.(\d+)", str(info.get("gitVersion", "")))
    if found:
        return int(found.group(1)), int(found.group(2))
    raise ValueError(f"cannot read a Kubernetes version from {info!r}")


def _decide(toggle: str, supported: bool) -> bool:
    if toggle == "true":
        return True
    if toggle == "false":
        return False
    return supported


def capabilities_for(info: dict[str, Any], settings: OperatorSettings) -> ServerCapabilities:
    """The capabilities of a server that answered `info` on /version, after the overrides."""
    version = parse_version(info)
    return ServerCapabilities(
        version=version,
        pod_failure_policy=_decide(settings.use_pod_failure_policy, version >= (1, 26)),
        suspend=_decide(settings.use_suspend, version >= (1, 22)),
        indexed_jobs=_decide(settings.use_indexed_jobs, version >= (1, 22)),
        git_version=str(info.get("gitVersion", "")),
    )
