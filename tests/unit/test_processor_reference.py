"""The in-memory reference of device state (the oracle of the crash test) and the rate window."""

from services.common.models import PostbackRecord
from services.processor.metrics import RateWindow
from services.processor.reference import ReferenceDeviceState

DAY = 86_400_000


def _pb(event_id, event, install="d1", tid=None, at=1_000, received=None):
    return PostbackRecord(event_id=event_id, account_id=1, install_id=install, event=event, occurred_at=at,
                          received_at=at if received is None else received, tid=tid)


def test_first_postback_records_install_and_the_event():
    """A device's first postback also records `install`, published with a derived event id."""
    ref = ReferenceDeviceState(30 * DAY)
    ref.apply(_pb("a", "reg"))
    assert set(ref.devices[(1, "d1")]) == {"install", "reg"}
    assert [(e.event_id, e.event, e.first_occurrence) for e in ref.published] == [("a:install", "install", True), ("a", "reg", True)]


def test_deposits_get_ordinals_and_dep_n_codes():
    """The n-th dep carries ordinal n and, from n = 2, records dep_<n>."""
    ref = ReferenceDeviceState(30 * DAY)
    for i in range(3):
        ref.apply(_pb(f"e{i}", "dep", at=1_000 + i))
    device = ref.devices[(1, "d1")]
    assert device["dep"].count == 3 and "dep_2" in device and "dep_3" in device and "dep_4" not in device
    assert [e.deposit_ordinal for e in ref.published if e.event == "dep"] == [1, 2, 3]
    assert ref.device_counts(1) == {"install": 1, "dep": 1, "dep_2": 1, "dep_3": 1}


def test_a_repeated_tid_changes_nothing_within_retention_only():
    """Same tid, device and event: ignored within the retention window, counted after it."""
    ref = ReferenceDeviceState(30 * DAY)
    ref.apply(_pb("a", "dep", tid="t", received=0))
    ref.apply(_pb("b", "dep", tid="t", received=30 * DAY - 1))
    assert ref.devices[(1, "d1")]["dep"].count == 1 and ref.duplicate_tids == 1
    ref.apply(_pb("c", "dep", tid="t", received=30 * DAY))
    assert ref.devices[(1, "d1")]["dep"].count == 2
    ref.apply(_pb("d", "reg", tid="t"))  # another event: not a duplicate
    assert "reg" in ref.devices[(1, "d1")]


def test_an_install_postback_on_a_new_device_is_published_once():
    """`install` as the first postback is the install record itself."""
    ref = ReferenceDeviceState(30 * DAY)
    ref.apply(_pb("a", "install"))
    assert [(e.event_id, e.event) for e in ref.published] == [("a", "install")]
    assert ref.devices[(1, "d1")]["install"].count == 1


def test_first_and_last_are_min_and_max_of_occurrence_times():
    """Late postbacks move `first` back, never `last`."""
    ref = ReferenceDeviceState(30 * DAY)
    for i, at in enumerate((500, 900, 100)):
        ref.apply(_pb(f"e{i}", "reg", at=at))
    stat = ref.devices[(1, "d1")]["reg"]
    assert (stat.first, stat.last, stat.count) == (100, 900, 3)


def test_rate_window_averages_over_its_window():
    """Events per second over the window, forgetting older samples."""
    now = [0.0]
    rate = RateWindow(window_s=10, clock=lambda: now[0])
    rate.add(100)
    now[0] = 5.0
    assert rate.add(400) == 100.0
    now[0] = 20.0
    assert rate.add(50) == 50.0
