"""Online test-time adaptation (our reading of REST).

- `session`: `OnlineSession`, one user's private, resettable adaptation of a shared encoder; its losses.
- `users`:   the per-user registry of sessions the service keeps (least recently used dropped first).

Its evaluation over a query stream is `hystar.eval.online` (`hystar eval --online`).
"""

from .session import (
    PARAMETER_SETS,
    OnlineConfig,
    OnlineSession,
    StepReport,
    candidate_prediction,
    decouple,
    entropy,
    private_shell,
    refined_prediction,
    session_parameter_names,
    uniformity,
)

__all__ = ["PARAMETER_SETS", "OnlineConfig", "OnlineSession", "StepReport", "candidate_prediction", "decouple",
           "entropy", "private_shell", "refined_prediction", "session_parameter_names", "uniformity"]
