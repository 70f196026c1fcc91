"""The processor's reference semantics (services/domain/postback.py), rule by rule."""

from services.domain.postback import Applied, DeviceBook, Postback, RecordMeta, Rejection, process_postback

DAY = 86_400_000


def _pb(event_id, event, install="d1", tid=None, at=1_000, received=None):
    return Postback(event_id, 1, install, event, at, at if received is None else received, tid)


class Feed:
    """One partition's records, offsets counting up."""

    def __init__(self, book: DeviceBook, partition: int = 0):
        self.book, self.partition, self.offset = book, partition, -1

    def __call__(self, postback, offset=None):
        self.offset = self.offset + 1 if offset is None else offset
        return process_postback(self.book, postback, RecordMeta(self.partition, self.offset))


def test_first_postback_records_install_and_the_event():
    """A device's first postback also records `install`, published first with a derived event id."""
    book = DeviceBook(30 * DAY)
    result = Feed(book)(_pb("a", "reg"))
    assert set(book.device(1, "d1").events) == {"install", "reg"}
    assert [(e.event_id, e.event, e.first_occurrence) for e in result.events] == \
        [("a:install", "install", True), ("a", "reg", True)]
    assert result.new_device and book.device(1, "d1").number == 1


def test_deposits_get_ordinals_and_dep_n_codes():
    """The n-th dep carries ordinal n and, from n = 2, records dep_<n>."""
    book, feed = DeviceBook(30 * DAY), None
    feed = Feed(book)
    ordinals = [e.deposit_ordinal for i in range(3) for e in feed(_pb(f"e{i}", "dep", at=1_000 + i)).events
                if e.event == "dep"]
    device = book.device(1, "d1").events
    assert device["dep"].count == 3 and "dep_2" in device and "dep_3" in device and "dep_4" not in device
    assert ordinals == [1, 2, 3]
    assert book.device_counts(1) == {"install": 1, "dep": 1, "dep_2": 1, "dep_3": 1}


def test_a_repeated_tid_changes_nothing_within_retention_only():
    """Same tid, device and event: ignored within the retention window, counted after it."""
    book = DeviceBook(30 * DAY)
    feed = Feed(book)
    feed(_pb("a", "dep", tid="t", received=0))
    assert feed(_pb("b", "dep", tid="t", received=30 * DAY - 1)) == Applied(duplicate_tid=True)
    assert book.device(1, "d1").events["dep"].count == 1
    feed(_pb("c", "dep", tid="t", received=30 * DAY))
    assert book.device(1, "d1").events["dep"].count == 2
    feed(_pb("d", "reg", tid="t"))  # another event: not a duplicate
    assert "reg" in book.device(1, "d1").events


def test_tids_of_different_devices_never_meet_even_with_colons():
    """(install id, code, tid) is the identity of a tid, however the parts could be glued together."""
    book = DeviceBook(30 * DAY)
    feed = Feed(book)
    feed(_pb("a", "dep", install="x:reg", tid="T"))
    assert feed(_pb("b", "reg", install="x", tid="dep:T")).events


def test_an_install_postback_on_a_new_device_is_published_once():
    """`install` as the first postback is the install record itself."""
    book = DeviceBook(30 * DAY)
    result = Feed(book)(_pb("a", "install"))
    assert [(e.event_id, e.event) for e in result.events] == [("a", "install")]
    assert book.device(1, "d1").events["install"].count == 1


def test_first_and_last_are_min_and_max_of_occurrence_times():
    """Late postbacks move `first` back, never `last`."""
    book = DeviceBook(30 * DAY)
    feed = Feed(book)
    for i, at in enumerate((500, 900, 100)):
        feed(_pb(f"e{i}", "reg", at=at))
    assert tuple(book.device(1, "d1").events["reg"]) == (100, 900, 3)


def test_redelivered_offsets_change_nothing():
    """An offset at or below the partition's watermark was applied before."""
    book = DeviceBook(30 * DAY)
    feed = Feed(book)
    for offset in range(6):
        feed(_pb(f"a{offset}", "reg" if offset < 5 else "dep"), offset=offset)
    assert feed(_pb("a", "dep"), offset=5) == Applied(redelivered=True)
    assert feed(_pb("y", "dep"), offset=7) == Applied(gap=True)  # offset 6 missing: refused, watermark stays
    assert feed(_pb("z", "dep"), offset=2) == Applied(redelivered=True)
    assert book.device(1, "d1").events["dep"].count == 1
    other = Feed(book, partition=1)  # another partition has its own watermark
    assert other(_pb("b", "reg", install="d2"), offset=0).events


def test_derived_deposit_codes_are_rejected_but_their_offset_counts():
    """dep_<n> is minted by the processor; posting one is refused and changes no device."""
    book = DeviceBook(30 * DAY)
    feed = Feed(book)
    result = feed(_pb("a", "dep_2"), offset=0)
    assert isinstance(result, Rejection) and result.reason == "reserved_event"
    assert book.devices == {} and book.watermarks == {0: 0}


def test_device_numbers_are_dense_per_account_and_partition():
    book = DeviceBook(30 * DAY)
    feed = Feed(book)
    for i, install in enumerate(("a", "b", "a", "c")):
        feed(_pb(f"e{i}", "reg", install=install))
    assert [book.device(1, i).number for i in "abc"] == [1, 2, 3]
