"""API keys: format, and key ids that the command line can take as an option value."""

import re

from services.common.catalog import hash_api_key, key_id_of, new_api_key


def test_keys_are_pbs_and_43_alphanumerics_and_unique():
    keys = [new_api_key() for _ in range(500)]
    assert all(re.fullmatch(r"pbs_[A-Za-z0-9]{43}", k) for k in keys)
    assert len(set(keys)) == len(keys)


def test_key_ids_never_start_with_a_dash():
    # token_urlsafe ids began with "-" about once in 64 keys; argparse then read
    # `--key-id -DZpcHi2` as an option and `pbseg accounts revoke-key` failed.
    assert not any(key_id_of(new_api_key()).startswith("-") for _ in range(2000))


def test_key_id_and_hash():
    key = new_api_key()
    assert key_id_of(key) == key[4:12] and len(hash_api_key(key)) == 64
