"""The FineTuneJob contract: typed models from which the CRD is generated (the one source of truth).

The API, the operator and the trainer all import these models; `make crds` renders the CRD
YAML from them and a test fails when the committed YAML drifts.
"""

from kubetune_crd.resource import (
    API_VERSION,
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    VERSION,
    FineTuneJob,
)
from kubetune_crd.spec import FineTuneJobSpec
from kubetune_crd.status import TERMINAL_PHASES, FineTuneJobStatus

__all__ = [
    "API_VERSION",
    "CRD_NAME",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "TERMINAL_PHASES",
    "VERSION",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
]
