"""Catalog ids are offsets of the catalog-ids log, one partition per kind (services/domain/catalog_ids.py)."""

from services.domain.catalog_ids import ACCOUNT, EVENT, KIND_PARTITION, id_at, offset_of, padding_needed
from services.domain.codes import FIRST_CUSTOM_ID


def test_each_kind_has_its_own_partition_and_first_id():
    """Accounts start at 1, custom events after the system events; offsets map back."""
    assert sorted(KIND_PARTITION.values()) == list(range(len(KIND_PARTITION)))  # one partition each
    assert (id_at(ACCOUNT, 0), id_at(EVENT, 0)) == (1, FIRST_CUSTOM_ID)
    assert all(offset_of(kind, id_at(kind, n)) == n for kind in KIND_PARTITION for n in (0, 7, 10**9))


def test_padding_moves_the_next_id_just_past_the_highest_stored():
    """next offset 3 on a catalog holding account 10: 7 fillers, then the allocation gets id 11."""
    assert padding_needed(ACCOUNT, 3, 10) == 7 and id_at(ACCOUNT, 3 + 7) == 11
    assert padding_needed(ACCOUNT, 11, 10) == 0 and padding_needed(EVENT, 0, 0) == 0
    assert id_at(EVENT, padding_needed(EVENT, 0, 150)) == 151
