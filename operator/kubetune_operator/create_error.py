"""Why a FineTuneJob's Job (or its Service, NetworkPolicy) does not exist yet, or never will.

The reconciler produces one when a create call fails or a check refuses the spec; the status
derivation turns it into Pending (Creating, retried) or Failed (permanent).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CreateError:
    """A reason the Job is not there: retried unless `permanent`.

    `refusal` names the operator's own check that refused the spec (the JobCreated condition's
    reason, e.g. IndexedJobsUnsupported); None for an API server answer.
    """

    message: str
    permanent: bool = False
    refusal: str | None = None

    @classmethod
    def refused(cls, reason: str, message: str) -> CreateError:
        """The operator will not create the Job for this spec on this cluster."""
        return cls(message=message, permanent=True, refusal=reason)

    @property
    def failure_message(self) -> str:
        """The FineTuneJob's failure message when permanent."""
        if self.refusal is not None:
            return self.message
        return f"the Job was rejected: {self.message}"


def is_permanent(error: CreateError | None) -> bool:
    return error is not None and error.permanent
