"""Keeps the database and libvirt in step (run by the agent): events are hints, polling is the proof.

One pass reads the database first and libvirt second, so a server the API is starting or stopping at
the same moment is never misjudged for longer than one pass.
"""

from __future__ import annotations

import logging

from .servers import Servers

log = logging.getLogger("openhosting.reconcile")

RUNNING = {"active", "paused"}


class Reconciler:
    def __init__(self, servers: Servers, substrate):
        self.servers = servers
        self.substrate = substrate

    def run_once(self) -> None:
        known = self.servers.all_ids()
        active = self.servers.active_ids()
        states = self.substrate.states()
        for server_id in active:
            state = states.get(server_id)
            if state not in RUNNING:
                outcome = self.servers.stopped(server_id)
                log.info("server %s is no longer running (%s): %s", server_id, state or "gone", outcome)
                if outcome == "destroyed":
                    self.substrate.forget(server_id)
        for server_id, state in states.items():
            if server_id not in known:
                log.warning("removing domain of unknown server %s (ours, no database row)", server_id)
                self.substrate.forget(server_id)
            elif state in RUNNING and server_id not in active:
                log.info("server %s runs although stopped in the database: adopting it", server_id)
                self.servers.adopt(server_id)
