"""An in-memory reference of the processor's semantics (pure): the oracle that tests and
benchmarks compare Redis and the device-events topic against. Deliberately written apart from
apply_batch.lua, in the plainest form, so the two can disagree when one of them is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.models import PostbackRecord


@dataclass
class EventStat:
    first: int
    last: int
    count: int


@dataclass(frozen=True)
class ExpectedDeviceEvent:
    event_id: str
    account_id: int
    install_id: str
    event: str
    deposit_ordinal: int | None
    first_occurrence: bool
    occurred_at: int


@dataclass
class ReferenceDeviceState:
    tid_retention_ms: int
    devices: dict[tuple[int, str], dict[str, EventStat]] = field(default_factory=dict)
    tids: dict[tuple[int, str, str, str], int] = field(default_factory=dict)
    published: list[ExpectedDeviceEvent] = field(default_factory=list)
    duplicate_tids: int = 0

    def apply(self, r: PostbackRecord) -> None:
        if r.tid:
            key = (r.account_id, r.install_id, r.event, r.tid)
            first_seen = self.tids.get(key)
            if first_seen is not None and r.received_at - first_seen < self.tid_retention_ms:
                self.duplicate_tids += 1
                return
            self.tids[key] = r.received_at
        device_key = (r.account_id, r.install_id)
        device = self.devices.get(device_key)
        if device is None:
            device = self.devices[device_key] = {"install": EventStat(r.occurred_at, r.occurred_at, 1)}
            install_id = r.event_id if r.event == "install" else f"{r.event_id}:install"
            self.published.append(ExpectedDeviceEvent(install_id, r.account_id, r.install_id, "install", None, True, r.occurred_at))
            if r.event == "install":
                return
        first = self._mark(device, r.event, r.occurred_at)
        ordinal = None
        if r.event == "dep":
            ordinal = device["dep"].count
            if ordinal >= 2:
                self._mark(device, f"dep_{ordinal}", r.occurred_at)
        self.published.append(ExpectedDeviceEvent(r.event_id, r.account_id, r.install_id, r.event, ordinal, first, r.occurred_at))

    @staticmethod
    def _mark(device: dict[str, EventStat], code: str, ts: int) -> bool:
        stat = device.get(code)
        if stat is None:
            device[code] = EventStat(ts, ts, 1)
            return True
        stat.first, stat.last, stat.count = min(stat.first, ts), max(stat.last, ts), stat.count + 1
        return False

    def device_counts(self, account_id: int) -> dict[str, int]:
        """On how many devices of the account each code occurred."""
        counts: dict[str, int] = {}
        for (acct, _), events in self.devices.items():
            if acct == account_id:
                for code in events:
                    counts[code] = counts.get(code, 0) + 1
        return counts
