"""Online adaptation as a service serves it: whether it can run, each user's sessions, and what all sessions share.

What every session shares is made once, on first use: each side's gallery vectors as one float32 tensor on the
encoder's device, and the trunk features of a few gallery photos spread over the gallery (anchors: a session keeps
their embeddings where the shared model puts them). When the gallery changes (`new_gallery`), sessions, which hold
the old gallery's vectors, start again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np
import torch

from ..images import ImageError, open_image
from .session import OnlineSession, session_parameter_names
from .users import OnlineServiceConfig, OnlineSessions, TrackedSession

log = logging.getLogger(__name__)

SpaceOf = Callable[[str], object]   # "base" | "adapted" -> that side's `Space` (its `.index`)


class ServedOnline:
    """Per-user online sessions over a base encoder and, with an adapter, its adapted encoder."""

    def __init__(self, encoder, adapter, config: OnlineServiceConfig | None, space_of: SpaceOf,
                 unavailable: str = ""):
        """`unavailable`: a reason to turn it off whatever the encoders allow (e.g. ZeroGPU)."""
        self.encoder, self.adapter, self.config, self._space_of = encoder, adapter, config, space_of
        self.note = unavailable or self._unavailable()
        self.sessions = None if self.note else OnlineSessions(self._new_session, config.max_users)
        self._lock = threading.Lock()
        self._galleries: dict[str, torch.Tensor] = {}
        self._anchors: torch.Tensor | None = None
        self._anchors_ready = False

    @property
    def available(self) -> bool:
        return self.sessions is not None

    def _unavailable(self) -> str:
        """Why online adaptation cannot run here; "" when it can."""
        if self.config is None:
            return "turned off in the service configuration"
        try:
            for encoder in [self.encoder] + ([self.adapter] if self.adapter is not None else []):
                session_parameter_names(encoder, self.config.adaptation.params)
        except (ValueError, AttributeError) as error:
            return str(error)
        return ""

    def session(self, user: str, side: str) -> TrackedSession:
        return self.sessions.get(user, side)

    def find(self, user: str, side: str) -> TrackedSession | None:
        return self.sessions.find(user, side) if self.sessions is not None else None

    def reset(self, user: str | None) -> bool:
        """`user`'s sessions back to the shared model; False when there was none to reset."""
        return self.sessions is not None and user is not None and self.sessions.reset(user)

    def drop(self, user: str | None) -> None:
        if self.sessions is not None and user is not None:
            self.sessions.drop(user)

    def new_gallery(self) -> None:
        """The gallery changed: shared tensors made again on first use, every session starts again."""
        with self._lock:
            self._galleries.clear()
            self._anchors, self._anchors_ready = None, False
            if self.sessions is not None:
                self.sessions = OnlineSessions(self._new_session, self.config.max_users)

    # -- what sessions share --------------------------------------------------------------------------

    def _new_session(self, side: str) -> OnlineSession:
        encoder = self.adapter if side == "adapted" else self.encoder
        return OnlineSession(encoder, self._gallery(side), self.config.adaptation,
                             anchor_features=self._anchor_features())

    def _gallery(self, side: str) -> torch.Tensor:
        """The side's gallery vectors as one float32 tensor that all sessions share (made on first use)."""
        with self._lock:
            if side not in self._galleries:
                vectors = np.asarray(self._space_of(side).index.vectors, dtype=np.float32)
                self._galleries[side] = torch.from_numpy(vectors).to(self.encoder.device)
            return self._galleries[side]

    def _anchor_features(self) -> torch.Tensor | None:
        with self._lock:
            if not self._anchors_ready:
                self._anchors = self._read_anchors(self.config.anchors)
                self._anchors_ready = True
            return self._anchors

    def _read_anchors(self, count: int) -> torch.Tensor | None:
        index = self._space_of("base").index
        rows = np.unique(np.linspace(0, len(index) - 1, min(count, len(index))).round().astype(int))
        pixels = []
        for row in rows if count > 0 else []:
            try:
                pixels.append(self.encoder.preprocess(open_image(index.path(int(row)))))
            except (ImageError, OSError) as error:
                log.warning("online anchor %s skipped: %s", index.path(int(row)), error)
        if not pixels:
            return None
        with torch.no_grad():
            return self.encoder.visual.trunk(torch.stack(pixels).to(self.encoder.device))
