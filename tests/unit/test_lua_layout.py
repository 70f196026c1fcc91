"""One key spec: the Lua scripts spell no key and no layout constant; they get both from the
header services/common/keys.py generates."""

import re
from pathlib import Path

from services.common.keys import (DEVICE_INDEX_BUCKETS, NAMES_BUCKET, PARTITION_KEYS, REDIS_ENCODING_ARGS, PartitionKeys,
                                  lua_header)

SERVICES = Path(__file__).resolve().parents[2] / "services"
# A key literal: a quoted string holding `:<word>` or `<word>:` (a key part), or a `{...}` hash tag.
KEY_LITERAL = re.compile(r"""(['"])(?:[^'"\n]*:[A-Za-z_]+[^'"\n]*|[^'"\n]*[A-Za-z_]+:[^'"\n]*|\{[^'"\n]*\})\1""")


def _code(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def test_no_lua_file_spells_a_key_or_the_bucket_size():
    scripts = sorted(SERVICES.rglob("*.lua"))
    assert len(scripts) >= 6
    for path in scripts:
        text = path.read_text()
        assert str(NAMES_BUCKET) not in text and str(DEVICE_INDEX_BUCKETS) not in text, path
        assert KEY_LITERAL.findall(_code(text)) == [], path


def test_the_detector_finds_key_literals():
    """The check above could fail: it catches the spellings the scripts used to have."""
    for line in ("local k = tag .. ':s:' .. acct", "local k = ARGV[1] .. ':list:' .. a", "x = '{pbseg:p1}'",
                 "return tag .. ':outbox'"):
        assert KEY_LITERAL.findall(line), line
    for line in ("local p = find(st, ':', j + 1, true)", "local token = count == 1 and ':1' or ':0'"):
        assert not KEY_LITERAL.findall(line), line


def test_the_header_builds_the_same_keys_as_python():
    """Every generated Lua key function concatenates exactly what PartitionKeys formats."""
    header = lua_header()
    keys = PartitionKeys("pfx", 3)
    samples = {"applied_offset": dict(topic="postbacks.v1"), "identity": dict(topic="postbacks.v1"),
               "applied_as_of": dict(topic="postbacks.v1"), "device_index": dict(account=7, bucket=12),
               "device_states": dict(account=7, bucket=2), "device_seq": dict(account=7),
               "device_names": dict(account=7, bucket=2), "segment": dict(account=7, code="dep_2"),
               "device_counts": dict(account=7), "segment_codes": dict(account=7),
               "tid": dict(account=7, install_len=3, install_id="a:b", code="reg", tid="t:1"), "outbox": {},
               "scratch": dict(token="ab12"), "window_set": dict(account=7, code="reg", bucket="h493000"),
               "window_bits": dict(account=7, code="reg", bucket="d20540"), "count_rank": dict(account=7, code="open"),
               "deposit_sums": dict(account=7, currency="USD"), "deposit_sum_of": dict(account=7, bucket=2),
               "timer_due": {}, "timer_list": dict(trigger=12, epoch=1, minute=29411333),
               "trigger_stats": dict(trigger=12), "trigger_recent": dict(trigger=12)}
    assert set(samples) == set(PARTITION_KEYS)
    for name, parts in samples.items():
        m = re.search(rf"local function key_{name}\((.*?)\) return (.*?) end", header)
        params, body = m.group(1).split(", "), m.group(2)
        values = {"tag": keys.tag, **{k: str(v) for k, v in parts.items()}}
        assert params == ["tag", *parts]
        built = "".join(values[p] if p in values else p.strip("'") for p in body.split(" .. "))
        assert built == f"{keys.tag}:" + PARTITION_KEYS[name].format(**parts), name
    assert f"local NAMES_BUCKET = {NAMES_BUCKET}" in header


def test_the_compose_file_runs_redis_with_the_bucket_size():
    """deploy/compose.yaml cannot import keys.py: a bucket of NAMES_BUCKET fields must stay listpack."""
    compose = (SERVICES.parent / "deploy" / "compose.yaml").read_text()
    assert ", ".join(f'"{a}"' for a in REDIS_ENCODING_ARGS) in compose
