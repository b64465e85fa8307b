"""Start and stop a real `bentoml serve` of a packaged model on a free 127.0.0.1 port (shared by the serving tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVICE = "serving.service:FutureIndustryClassifier"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def package_model(artifact: Path, bento_home: Path, name: str = "fic-test") -> str:
    """`python -m serving.package` into `bento_home`; returns the tag."""
    result = subprocess.run([sys.executable, "-m", "serving.package", str(artifact), "--name", name],
                            capture_output=True, text=True, env={**os.environ, "BENTOML_HOME": str(bento_home)},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip().splitlines()[-1]
    assert tag.startswith(f"{name}:"), result.stdout
    return tag


def serve_env(bento_home: Path, model_tag: str, **settings: str) -> dict[str, str]:
    return {**os.environ, "BENTOML_HOME": str(bento_home), "FIC_MODEL": model_tag, "FIC_PRECISION": "fp32",
            "BENTOML_DO_NOT_TRACK": "True", **settings}


@dataclass
class LiveServer:
    url: str
    proc: subprocess.Popen
    log_path: Path
    _log: object = field(repr=False, default=None)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def worker_pids(self) -> list[int]:
        """The worker processes (the ones that load the model), children of `bentoml serve`."""
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
                    pids.append(child.pid)
            except psutil.NoSuchProcess:
                pass
        return pids

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("bentoml serve exited:\n" + self.log_text()[-3000:])
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"bentoml serve did not become ready in {timeout:.0f} s:\n" + self.log_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()


def start_server(bento_home: Path, model_tag: str, log_path: Path, ready_timeout: float = 90,
                 **settings: str) -> LiveServer:
    """`bentoml serve` in its own process group, ready to answer; FIC_* settings as keyword arguments."""
    port = free_port()
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1",
                             "--port", str(port)], env=serve_env(bento_home, model_tag, **settings),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, log_path, log)
    try:
        server.wait_ready(ready_timeout)
    except RuntimeError:
        server.stop()
        raise
    return server
