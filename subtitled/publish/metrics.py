"""Prometheus metrics of the subtitle server, on a registry of its own.

Each `SubtitleServer` has its own `CollectorRegistry` (not the process-global
default), so that tests can run several servers and the pipeline can add its
own metrics to the registry `/metrics` exposes.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class PublishMetrics:
    """The publish stage's counters and gauges."""

    clients: Gauge
    messages_sent: Counter
    partials_dropped: Counter
    slow_clients_closed: Counter
    protocol_errors: Counter
    segments_published: Counter
    translations_published: Counter
    statuses_published: Counter
    power_profile: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> PublishMetrics:
        """Register the publish metrics on `registry`."""
        return cls(
            clients=Gauge(
                "subtitled_ws_clients", "WebSocket feed clients connected", registry=registry
            ),
            messages_sent=Counter(
                "subtitled_ws_messages_sent",
                "Messages written to WebSocket feed clients",
                registry=registry,
            ),
            partials_dropped=Counter(
                "subtitled_ws_partials_dropped",
                "Partial revisions dropped from a slow client's queue",
                registry=registry,
            ),
            slow_clients_closed=Counter(
                "subtitled_ws_slow_clients_closed",
                "Clients closed because they fell behind the feed",
                registry=registry,
            ),
            protocol_errors=Counter(
                "subtitled_ws_protocol_errors",
                "Client frames or requests the protocol does not allow, by error code",
                ["code"],
                registry=registry,
            ),
            segments_published=Counter(
                "subtitled_segments_published",
                "Segment revisions published, by status",
                ["status"],
                registry=registry,
            ),
            translations_published=Counter(
                "subtitled_translations_published",
                "New translations of a published partial revision (`translation` messages)",
                registry=registry,
            ),
            power_profile=Gauge(
                "subtitled_power_profile",
                "1 for the power profile in force and the power source it was chosen for",
                ["profile", "source"],
                registry=registry,
            ),
            statuses_published=Counter(
                "subtitled_statuses_published",
                "Status updates published, by capture state",
                ["capture"],
                registry=registry,
            ),
        )
