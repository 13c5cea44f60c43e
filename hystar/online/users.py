"""The per-user registry of online sessions: each user's sessions, one per side they search, least recently used
dropped first. The service embeds a user's query images through their session."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .session import OnlineConfig, OnlineSession


@dataclass(frozen=True)
class OnlineServiceConfig:
    """Online adaptation in the app: one private session per user and encoder, never the shared model."""
    # An app user makes a handful of queries, not hundreds: adaptation starts after 4 (the library waits for 16).
    adaptation: OnlineConfig = field(default_factory=lambda: OnlineConfig(min_history=4))
    max_users: int = 64                # users with live sessions; beyond it the least recently used are dropped
    anchors: int = 32                  # gallery photos a session keeps where the shared model puts them


@dataclass(frozen=True)
class OnlineStatus:
    """Where a user's online session stands after a search."""
    side: str                          # the side it embeds: "adapted" with style adaptation on, else "base"
    images: int                        # query images (sketches, uploads) it has observed since the last reset
    adapted_on: int                    # of them, the reliable ones its adaptation is computed on
    updates: int                       # adaptation steps taken
    observed: bool                     # this search's images were observed (a text-only query has none)
    starts_after: int = 0              # query images a session sees before it first judges one reliable


class TrackedSession:
    """A user's `OnlineSession` of one side, with the counts its status reports."""

    def __init__(self, side: str, session: OnlineSession):
        self.side, self.session = side, session
        self.images = self.adapted_on = 0
        self._lock = threading.Lock()

    def observe(self, features: torch.Tensor) -> np.ndarray:
        """The session's embeddings of `features` (before its step, as REST searches), then one adaptation step."""
        with self._lock:
            z, report = self.session.observe_with_report(features)
            self.images += report.queries
            self.adapted_on += report.reliable
        return z.float().cpu().numpy()

    def reset(self) -> None:
        with self._lock:
            self.session.reset()
            self.images = self.adapted_on = 0

    def status(self, observed: bool) -> OnlineStatus:
        with self._lock:
            return OnlineStatus(self.side, self.images, self.adapted_on, self.session.steps, observed,
                                self.session.cfg.min_history)


class OnlineSessions:
    """Each user's sessions, one per side they searched, created on first use; at most `max_users` users are
    kept, the least recently seen dropped first."""

    def __init__(self, factory: Callable[[str], OnlineSession], max_users: int = 64):
        if max_users < 1:
            raise ValueError("max_users must be at least 1")
        self.factory, self.max_users = factory, max_users
        self._users: OrderedDict[str, dict[str, TrackedSession]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user: str) -> bool:
        return user in self._users

    def get(self, user: str, side: str) -> TrackedSession:
        found = self.find(user, side)
        if found is not None:
            return found
        created = TrackedSession(side, self.factory(side))  # outside the lock: other users do not wait
        with self._lock:
            sessions = self._users.setdefault(user, {})
            self._users.move_to_end(user)
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
            return sessions.setdefault(side, created)

    def find(self, user: str, side: str) -> TrackedSession | None:
        with self._lock:
            if user not in self._users:
                return None
            self._users.move_to_end(user)
            return self._users[user].get(side)

    def reset(self, user: str) -> bool:
        """Every session of `user` back to the shared model; False when the user has none."""
        with self._lock:
            sessions = list(self._users.get(user, {}).values())
        for tracked in sessions:
            tracked.reset()
        return bool(sessions)

    def drop(self, user: str) -> None:
        with self._lock:
            self._users.pop(user, None)
