"""Which history entries ``watcher notify`` posts, and what each post says.

A rejection is a ``rejected`` entry (its detail: the list of errors). A regression is a ``scored``
entry whose detail is a JSON object ``{"regression": ["<reason>", ...]}`` (a scored entry's detail
is otherwise NULL). Every other entry (scored without regression, removed) is no event.

Each event carries its history id; the idempotency key (``<host>:<history>:<id>``, the
``Idempotency-Key`` header and the ``key`` field) lets a receiver drop a second delivery of the
same event. ``<history>`` names the database's history (:func:`history_tag`): a database rebuilt
or replaced starts its ids again, and its events must not look like deliveries already made.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

from watcher.config import WebhookFormat
from watcher.follow import Entry

Kind = Literal["rejected", "regressed"]


@dataclass(frozen=True)
class Event:
    """One post-worthy history entry, of host ``host``; ``reasons`` are a regression's."""

    host: str
    kind: Kind
    entry: Entry
    reasons: tuple[str, ...] = ()
    history: str = ""  #: :func:`history_tag` of the database's history ("": left out of the key)

    @property
    def id(self) -> int:
        """The history id: events are posted in its order."""
        return self.entry.id

    @property
    def key(self) -> str:
        """The idempotency key: the same for every delivery of this event."""
        host = urllib.parse.quote(self.host, safe="")
        return f"{host}:{self.history}:{self.entry.id}" if self.history else f"{host}:{self.entry.id}"

    def payload(self, fmt: WebhookFormat) -> dict[str, Any]:
        """The JSON body for a webhook of format ``fmt``."""
        if fmt == "slack":
            return {"text": self.text()}
        return {"key": self.key, "host": self.host, "event": self.kind, **self.entry._asdict(),
                "regression": list(self.reasons) if self.kind == "regressed" else None}  # fmt: skip

    def text(self) -> str:
        """One line for a chat channel."""
        e = self.entry
        if self.kind == "rejected":
            return f"watcher on {self.host}: {e.path} rejected:{e.detail()}"
        return f"watcher on {self.host}: model {e.model_id} regressed ({e.path}): {'; '.join(self.reasons)}"


def regression_reasons(detail: str | None) -> tuple[str, ...]:
    """A scored entry's regression reasons from its detail (empty: no regression, or no detail)."""
    if not detail:
        return ()
    try:
        value = json.loads(detail)
    except ValueError:
        return ()
    reasons = value.get("regression") if isinstance(value, dict) else None
    return tuple(str(r) for r in reasons) if isinstance(reasons, list) else ()


def history_tag(identity: str | None) -> str:
    """A short name for a history, from its identity (its first entry's id and time, which the
    daemon never trims: :meth:`watcher.store.Store.report_mark`); "" for an empty history."""
    return hashlib.sha256(identity.encode()).hexdigest()[:8] if identity else ""


def event_of(entry: Entry, detail: str | None, host: str, history: str = "") -> Event | None:
    """The event an entry is (``detail``: a scored entry's stored detail; ``history``: its
    history's :func:`history_tag`), or ``None``."""
    if entry.outcome == "rejected":
        return Event(host, "rejected", entry, history=history)
    if entry.outcome == "scored":
        reasons = regression_reasons(detail)
        if reasons:
            return Event(host, "regressed", entry, reasons, history)
    return None
