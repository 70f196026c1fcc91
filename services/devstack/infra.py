"""The local infrastructure: a real Apache Kafka broker (KRaft, single node) from its own
Maven Central jars, and Debian's redis-server with AOF. Used by `pbseg stack` (and so by
`make up`) and by the test fixtures when no broker or Redis is given.

Every function here is idempotent: starting what already answers is a no-op.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.common.keys import REDIS_ENCODING_ARGS
from services.devstack.procs import (
    ROOT,
    RUN_DIR,
    StartupError,
    is_running,
    port_open,
    start_process,
    wait_until,
)

KAFKA_VERSION = "4.4.0"
CACHE_DIR = Path(os.path.expanduser("~/.cache/pbseg"))
KAFKA_LIBS = CACHE_DIR / f"kafka-{KAFKA_VERSION}" / "libs"
KAFKA_DEPLOY = ROOT / "deploy" / "kafka"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_port: int) -> "Endpoint":
        text = text.split(",")[0].strip()
        for scheme in ("redis://", "kafka://", "http://"):
            if text.startswith(scheme):
                text = text[len(scheme):]
        text = text.split("/")[0]
        host, _, port = text.rpartition(":")
        if not host:
            return cls(text or "127.0.0.1", default_port)
        return cls(host, int(port))


def kafka_endpoint(bootstrap: str) -> Endpoint:
    return Endpoint.parse(bootstrap, 9092)


def redis_endpoint(url: str) -> Endpoint:
    return Endpoint.parse(url, 6379)


# --------------------------------------------------------------------------- Kafka

def fetch_kafka_jars(log=print) -> Path:
    """Resolve the broker's jars with the machine's Maven into ~/.cache/pbseg (outside git)."""
    marker = KAFKA_LIBS / ".complete"
    if marker.exists():
        return KAFKA_LIBS
    mvn = shutil.which("mvn")
    if not mvn:
        raise StartupError(
            "kafka", "Maven (`mvn`) is not on PATH; it fetches the Kafka broker jars from "
            "Maven Central. Install it: apt-get install -y maven (and Java 17: openjdk-17-jre-headless)."
        )
    log(f"fetching Apache Kafka {KAFKA_VERSION} broker jars with Maven into {KAFKA_LIBS} ...")
    KAFKA_LIBS.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "-f", str(KAFKA_DEPLOY / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={KAFKA_LIBS}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise StartupError("kafka", "Maven could not fetch the Kafka jars:\n" + result.stdout[-2000:] + result.stderr[-2000:])
    marker.write_text(KAFKA_VERSION)
    return KAFKA_LIBS


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise StartupError("kafka", "Java is not on PATH; the broker needs Java 17: apt-get install -y openjdk-17-jre-headless")
    return java


def start_kafka(bootstrap: str, name: str = "kafka", log=print, heap: str = "768m") -> None:
    ep = kafka_endpoint(bootstrap)
    if port_open(ep.host, ep.port):
        return
    libs = fetch_kafka_jars(log)
    data = RUN_DIR / "data" / name
    config = RUN_DIR / f"{name}.properties"
    controller_port = ep.port + 1
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{ep.host}:{controller_port}",
            f"listeners=PLAINTEXT://{ep.host}:{ep.port},CONTROLLER://{ep.host}:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{ep.host}:{ep.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=8",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.hours=168",
            "",
        ])
    )
    classpath = f"{libs}/*"
    java = _java()
    if not (data / "meta.properties").exists():
        data.mkdir(parents=True, exist_ok=True)
        cluster_id = uuid.uuid4().hex[:22]
        fmt = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
            capture_output=True, text=True,
        )
        if fmt.returncode != 0:
            raise StartupError("kafka", "StorageTool format failed:\n" + fmt.stdout[-1500:] + fmt.stderr[-1500:])
    start_process(
        name,
        [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
         f"-Dlog4j2.configurationFile={KAFKA_DEPLOY / 'log4j2.properties'}",
         "-cp", classpath, "kafka.Kafka", str(config)],
    )
    wait_until(name, lambda: port_open(ep.host, ep.port), timeout=90)


# --------------------------------------------------------------------------- Redis

def redis_server_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("redis-server is missing; installing Debian's redis-server with apt-get ...", file=sys.stderr)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
        res = subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, capture_output=True, text=True)
        if res.returncode == 0 and Path("/usr/bin/redis-server").exists():
            return "/usr/bin/redis-server"
        raise StartupError("redis", "apt-get install redis-server failed:\n" + res.stderr[-1500:])
    raise StartupError("redis", "redis-server is not installed. Install it: sudo apt-get install -y redis-server")


def start_redis(url: str, name: str = "redis") -> None:
    ep = redis_endpoint(url)
    if port_open(ep.host, ep.port):
        return
    binary = redis_server_binary()
    data = RUN_DIR / "data" / name
    data.mkdir(parents=True, exist_ok=True)
    start_process(
        name,
        [binary, "--bind", ep.host, "--port", str(ep.port), "--dir", str(data),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
         "--daemonize", "no", "--protected-mode", "no",
         *REDIS_ENCODING_ARGS],  # the encodings the key layout is sized for
    )
    wait_until(name, lambda: port_open(ep.host, ep.port), timeout=30)


def infra_running(bootstrap: str, redis_url: str) -> dict[str, bool]:
    k, r = kafka_endpoint(bootstrap), redis_endpoint(redis_url)
    return {"kafka": port_open(k.host, k.port), "redis": port_open(r.host, r.port)}


__all__ = ["start_kafka", "start_redis", "fetch_kafka_jars", "infra_running", "is_running", "Endpoint"]
