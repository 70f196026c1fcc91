"""`pbseg accounts ...` and the catalog store against the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest

from services.cli.main import main
from services.common.catalog import CatalogError, CatalogStore, hash_api_key
from services.common.catalog_ids import MemoryIdLog


@pytest.fixture
async def cli(infra, key_prefix, monkeypatch):
    """Runs `pbseg accounts ...`: `create` as a real process (the entry point and its one JSON
    line), the rest in-process in a thread (the same `main()`, without a second of start-up each).
    The accounts' keys go on the key_prefix fixture's teardown."""
    env = dict(os.environ, REDIS_URL=infra.redis_url, PBSEG_KEY_PREFIX=key_prefix)
    monkeypatch.setenv("REDIS_URL", infra.redis_url)
    monkeypatch.setenv("PBSEG_KEY_PREFIX", key_prefix)

    def in_process(args: list[str]) -> subprocess.CompletedProcess:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse usage errors
                code = exc.code
        return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())

    async def run(*args: str) -> subprocess.CompletedProcess:
        if args[0] == "create" and len(args) == 3 and args[2].strip():
            return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "services.cli.main", "accounts", *args],
                                           env=env, capture_output=True, text=True)
        return await asyncio.to_thread(in_process, ["accounts", *args])

    return run


async def test_accounts_cli_round_trip(cli, key_prefix, redis_client):
    """create prints one JSON line; keys are stored hashed; add/revoke/secret change what `list` shows."""
    created = await cli("create", "--name", "Acme")
    assert created.returncode == 0 and len(created.stdout.strip().splitlines()) == 1
    acct = json.loads(created.stdout)
    assert set(acct) == {"account_id", "api_key"} and acct["api_key"].startswith("pbs_")
    store = CatalogStore(redis_client, key_prefix, MemoryIdLog())
    stored = await redis_client.hgetall(store.keys.api_keys)
    assert list(stored) == [hash_api_key(acct["api_key"]).encode()]
    assert acct["api_key"].encode() not in b"".join(stored.values())
    added = json.loads((await cli("add-key", "--account", str(acct["account_id"]))).stdout)
    assert await store.account_for_api_key(added["api_key"]) == acct["account_id"]
    keys = json.loads((await cli("keys", "--account", str(acct["account_id"]))).stdout)
    assert sorted(k["key_id"] for k in keys) == sorted([acct["api_key"][4:12], added["key_id"]])
    assert (await cli("revoke-key", "--account", str(acct["account_id"]), "--key-id", added["key_id"])).returncode == 0
    assert await store.account_for_api_key(added["api_key"]) is None
    v = await store.version()
    secret = json.loads((await cli("set-secret", "--account", str(acct["account_id"]))).stdout)["secret"]
    assert len(secret) >= 8 and await store.version() > v
    snap = await store.snapshot()
    assert snap.accounts[acct["account_id"]].secret == secret
    listed = json.loads((await cli("list")).stdout)
    assert listed == [{"account_id": acct["account_id"], "name": "Acme", "created_at": listed[0]["created_at"],
                       "has_secret": True, "key_ids": [acct["api_key"][4:12]]}]
    assert (await cli("clear-secret", "--account", str(acct["account_id"]))).returncode == 0
    assert (await store.snapshot()).accounts[acct["account_id"]].secret is None


async def test_accounts_cli_errors_change_nothing(cli, key_prefix, redis_client):
    """Unknown accounts and keys, bad secrets and blank names exit non-zero with a message."""
    acct = json.loads((await cli("create", "--name", "A")).stdout)["account_id"]
    store = CatalogStore(redis_client, key_prefix, MemoryIdLog())
    v = await store.version()
    for args, code in [(("add-key", "--account", "99"), 1), (("revoke-key", "--account", str(acct), "--key-id", "nope"), 1),
                       (("set-secret", "--account", "99"), 1), (("set-secret", "--account", str(acct), "--secret", "short"), 2),
                       (("set-secret", "--account", str(acct), "--secret", "has space in it"), 2),
                       (("create", "--name", "  "), 2), (("keys", "--account", "99"), 1), (("create",), 2)]:
        out = await cli(*args)
        assert out.returncode == code, (args, out.stdout, out.stderr)
        assert out.stderr.strip() and not out.stdout.strip()
    assert await store.version() == v
    with pytest.raises(CatalogError):
        await store.set_secret(99, "whatever-secret")
