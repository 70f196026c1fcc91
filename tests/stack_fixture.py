"""The three services as real processes against the session's broker and Redis (single node or
cluster): the `running_stack` fixture of the end-to-end and cluster tiers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass

import pytest

from local_servers import free_port
from services.common.settings import StackSettings
from services.common.topics import ensure_topics, topic_plan
from services.devstack.procs import stop_process
from services.devstack.stack import start_service


@dataclass(frozen=True)
class RunningStack:
    ingress_url: str
    query_url: str
    env: dict[str, str]

    def pbseg(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "services.cli.main", *args], env=self.env,
                             capture_output=True, text=True, check=True)
        return out.stdout


@pytest.fixture
async def running_stack(service_env, unique):
    env = dict(service_env)
    env["INGRESS_BIND"] = f"127.0.0.1:{free_port()}"
    env["QUERY_BIND"] = f"127.0.0.1:{free_port()}"
    env["PROCESSOR_WEB_PORT"] = str(free_port())
    settings = StackSettings.model_validate(env)
    await ensure_topics(settings.kafka_bootstrap_servers, topic_plan(settings))
    names = []
    try:
        for name in ("ingress", "processor", "query"):
            log_name = f"test-{unique}-{name}"
            names.append(log_name)
            await asyncio.to_thread(start_service, name, settings, env, log_name)
        yield RunningStack(f"http://{env['INGRESS_BIND']}", f"http://{env['QUERY_BIND']}", env)
    finally:
        for log_name in names:
            await asyncio.to_thread(stop_process, log_name, 10)
