"""Start-up errors of the ingress are clear and end the process (docs/architecture.md, failure modes)."""

import subprocess
import sys
import time

from local_servers import free_port


def start(env: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "services.ingress", "--bind", f"127.0.0.1:{free_port()}"], env=env,
                          capture_output=True, text=True, timeout=90)
    return done, time.monotonic() - started


def test_ingress_without_kafka_exits_naming_kafka_after_its_startup_timeout(service_env):
    """No broker at KAFKA_BOOTSTRAP_SERVERS: retried for INGRESS_STARTUP_TIMEOUT_S, then exit 1 naming it."""
    bootstrap = f"127.0.0.1:{free_port()}"
    done, took = start(dict(service_env, KAFKA_BOOTSTRAP_SERVERS=bootstrap, INGRESS_STARTUP_TIMEOUT_S="3"))
    out = done.stdout + done.stderr
    print(out[-1500:], f"exited after {took:.1f} s")
    assert done.returncode != 0
    assert "Kafka" in out and bootstrap in out
    assert "Traceback" not in out


def test_ingress_without_redis_exits_naming_redis(service_env):
    """Kafka up, no Redis at REDIS_URL: exit 1 saying it cannot load the catalog from that Redis, and how to fix it."""
    done, took = start(dict(service_env, REDIS_URL="redis://127.0.0.1:1/0"))
    out = done.stdout + done.stderr
    print(out[-1500:], f"exited after {took:.1f} s")
    assert done.returncode != 0
    assert "cannot load the catalog from Redis at redis://127.0.0.1:1/0" in out and "make up" in out
    assert "Traceback" not in out
