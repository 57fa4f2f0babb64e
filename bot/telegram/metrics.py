"""Prometheus metrics for the running bot. No personal data in any label."""

from __future__ import annotations

import os
import socket

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# A `_created` series per counter would stamp when each rule first fired (a red flag's
# time, per rule id): the counts are all monitoring needs.
disable_created_metrics()


class Metrics:
    """One registry per bot (tests start several bots in one process)."""

    def __init__(self, worker: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # which worker this is (several share a PostgreSQL database): host:pid
        Gauge("triagebot_worker", "This worker; 1 while it runs", ["worker"],
              registry=r).labels(worker or f"{socket.gethostname()}:{os.getpid()}").set(1)
        self.updates = Counter("triagebot_updates_total", "Updates handled, by kind",
                               ["kind"], registry=r)
        self.latency = Histogram("triagebot_update_seconds", "Time to handle one update "
                                 "(to its commit; replies are sent after)", registry=r,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.started = Counter("triagebot_interviews_started_total", "Interviews started",
                               registry=r)
        self.finished = Counter("triagebot_interviews_finished_total",
                                "Interviews finished, by level", ["level"], registry=r)
        self.rules = Counter("triagebot_rules_fired_total", "Red-flag rules in outcomes, by id",
                             ["rule"], registry=r)
        self.api_errors = Counter("triagebot_telegram_errors_total", "Bot API errors, by code",
                                  ["code"], registry=r)
        self.retries = Counter("triagebot_send_retries_total", "Bot API calls retried",
                               registry=r)
        self.quarantined = Counter("triagebot_updates_quarantined_total",
                                   "Updates set aside after failing repeatedly, by kind",
                                   ["kind"], registry=r)
        self.store_errors = Counter("triagebot_store_errors_total",
                                    "Commits that failed because of the store (full disk, "
                                    "locked file); the update is kept and retried", registry=r)
        self.limited = Counter("triagebot_telegram_limited_total", "429s from Telegram, by "
                               "the scope they were taken for (chat, or the whole bot)",
                               ["scope"], registry=r)
        self.outbox = Gauge("triagebot_outbox_calls", "Calls committed and not yet made, by "
                            "priority (emergency, reply, first, bulk)", ["priority"], registry=r)
        self.db_size = Gauge("triagebot_db_size_bytes", "Size of the SQLite file and its WAL",
                             registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
