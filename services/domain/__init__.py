"""The domain core: every rule of postback segments, in plain Python over plain data.

Imports nothing outside the standard library and this package (tests/unit/test_domain_imports.py
checks it). Adapters - the Redis stores and their Lua scripts, Kafka, HTTP, the Segments page -
import their rules from here; where speed demands a second implementation (apply_batch.lua,
the segment filter scripts) tests/contract/ runs the same generated cases on both.

- `codes`: event codes, the reserved system codes, deposit ordinals.
- `device_state`: the packed device state (codec).
- `device_event`: the device-event.v1 record and the outbox entry that carries it (codec).
- `filters`: the segment filter model and its evaluator over a device's codes.
- `postback`: `process_postback` - the processor's semantics, the reference the Lua apply
  script is tested against.
"""
