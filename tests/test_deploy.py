"""Deployment files: the Dockerfile and the compose setup, checked without a Docker engine.

Static checks parse the files and hold them to what the code does (config
fields, console scripts, CLI flags, ports). Then the image's entrypoint runs
outside Docker exactly as the Dockerfile states it -- its ENV, its ENTRYPOINT,
its HEALTHCHECK command -- with only the data directory and the ports moved
to a temp directory and free loopback ports.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from xtsdb.client.cli import build_parser as cli_parser
from xtsdb.server.config import ServerConfig
from xtsdb.server.process import ServerProcess, free_port, server_env

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
FIELDS = {f.name for f in dataclasses.fields(ServerConfig)}
CLIENT_VARS = {"XTSDB_URL", "XTSDB_TOKEN"}  # read by the `xtsdb` CLI, not the server
START_TIMEOUT = 30.0


# -- parsing --------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, args = line.partition(" ")
        out.append((word.upper(), args.strip()))
    return out


DOCKERFILE = instructions(ROOT / "Dockerfile")


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in DOCKERFILE:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def runtime() -> list[tuple[str, str]]:
    return stages()[-1]


def args_of(name: str, stage: list[tuple[str, str]] | None = None) -> list[str]:
    return [a for i, a in (stage or DOCKERFILE) if i == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of("ENV", runtime()):
        for item in shlex.split(args):
            key, _, val = item.partition("=")
            env[key] = val
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def healthcheck_cmd() -> list[str]:
    [args] = args_of("HEALTHCHECK", runtime())
    return exec_form(args[args.index("CMD") + 3 :].strip())


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return doc


def env_file(path: Path) -> dict[str, str]:
    """The active (uncommented) ``KEY=VALUE`` lines."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, val = line.partition("=")
            out[key.strip()] = val.strip()
    return out


def xtsdb_names(text: str) -> set[str]:
    return set(re.findall(r"\bXTSDB_[A-Z_]+\b", text))


def assert_known(names: set[str], where: str) -> None:
    for name in names - CLIENT_VARS - {"XTSDB_CONFIG"}:
        assert name[len("XTSDB_") :].lower() in FIELDS, f"{where}: {name} is not a setting"


def seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert m, text
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# -- Dockerfile -----------------------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runtime_has_only_the_wheels() -> None:
    froms = args_of("FROM")
    assert len(froms) >= 2
    assert all(f.split()[0] == "python:3.11-slim" for f in froms), froms
    assert any("pip wheel" in r for r in args_of("RUN", stages()[0]))
    runs = " ".join(args_of("RUN", runtime()))
    for banned in ("apt-get install", "apt install", "gcc", "build-essential", "pip wheel"):
        assert banned not in runs, banned
    installs = [r for r in args_of("RUN", runtime()) if "pip install" in r]
    assert installs and all("--no-index" in r and "--find-links" in r for r in installs)
    assert not args_of("COPY", runtime()), "the runtime stage copies no sources"


def test_dockerfile_runs_as_a_user_with_a_volume_ports_and_exec_entrypoint() -> None:
    [user] = args_of("USER", runtime())
    assert user not in ("root", "0") and not user.startswith("0:")
    assert args_of("VOLUME", runtime()) == ["/var/lib/xtsdb"]
    exposed = {int(p.split("/")[0]) for a in args_of("EXPOSE", runtime()) for p in a.split()}
    env = image_env()
    assert exposed == {int(env["XTSDB_PORT"]), int(env["XTSDB_HTTP_PORT"])}
    defaults = ServerConfig()
    assert defaults.port in exposed
    assert defaults.http_port == -1  # off outside the image: the image must turn it on
    assert int(env["XTSDB_HTTP_PORT"]) == 8086  # InfluxDB's port: where its clients look
    [entry] = args_of("ENTRYPOINT", runtime())
    assert exec_form(entry) == ["xtsdb-server"]  # exec form: the server is PID 1
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "xtsdb-server" in scripts and "xtsdb" in scripts
    assert args_of("STOPSIGNAL", runtime()) in ([], ["SIGTERM"])


def test_dockerfile_env_is_a_valid_server_config() -> None:
    env = image_env()
    assert_known({k for k in env if k.startswith("XTSDB_")}, "Dockerfile ENV")
    config = ServerConfig.load([], env)  # 0.0.0.0 is accepted because of ALLOW_REMOTE
    assert config.host == "0.0.0.0" and str(config.data_dir) == "/var/lib/xtsdb"
    assert config.backup_dir is not None


def test_healthcheck_uses_the_cli_ping_on_the_server_port() -> None:
    cmd = healthcheck_cmd()
    assert cmd[0] == "xtsdb" and cmd[-1] == "ping"
    args = cli_parser().parse_args(cmd[1:])
    assert args.command == "ping"
    assert args.url == f"xtsdb://127.0.0.1:{image_env()['XTSDB_PORT']}"
    assert compose()["services"]["xtsdb"]["healthcheck"]["test"] == ["CMD", *cmd]


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert "*" in lines  # an allowlist
    for args in args_of("COPY", stages()[0]):
        *sources, _dest = args.split()
        for src in sources:
            assert (ROOT / src).exists(), src
            assert src.rstrip("/").removeprefix("./") in allowed, src
    # The package metadata needs the readme; every package dir is in the context.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["readme"] in allowed
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"].values()
    assert set(package_dirs) <= allowed


# -- compose --------------------------------------------------------------------------


def test_compose_service_settings() -> None:
    doc = compose()
    svc = doc["services"]["xtsdb"]
    assert svc["env_file"] == "xtsdb.env" and (DEPLOY / "xtsdb.env").is_file()
    assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}  # volume -> target
    data_volume = next(v for v, target in mounts.items() if target == "/var/lib/xtsdb")
    assert data_volume in doc["volumes"]  # a named volume, not a bind mount
    assert svc["restart"] == "unless-stopped"
    for port in svc["ports"]:
        assert port.startswith("127.0.0.1:"), port  # loopback on the host by default
    hc = svc["healthcheck"]
    assert seconds(hc["start_period"]) >= 60 and seconds(hc["timeout"]) > 3
    # The stop grace period must outlast the server's own shutdown timeout plus the
    # final flush, or Docker kills it mid-stop.
    shutdown = float(env_file(DEPLOY / "xtsdb.env").get("XTSDB_SHUTDOWN_TIMEOUT", 0) or 0)
    shutdown = shutdown or ServerConfig().shutdown_timeout
    assert seconds(svc["stop_grace_period"]) >= shutdown + 20


def test_compose_prometheus_is_optional_and_scrapes_the_http_port() -> None:
    doc = compose()
    prom = doc["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    assert f"127.0.0.1:8086:{image_env()['XTSDB_HTTP_PORT']}" in doc["services"]["xtsdb"]["ports"]
    target = [f"xtsdb:{image_env()['XTSDB_HTTP_PORT']}"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == target
    # The secure variant replaces the file (same mount target) with one sending a token.
    secure = yaml.safe_load((DEPLOY / "docker-compose.secure.yml").read_text())
    secure_prom = secure["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in secure_prom["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.secure.yml"
    config = yaml.safe_load((DEPLOY / "prometheus.secure.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == target
    secret, ca = secure_prom["secrets"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": f"/run/secrets/{secret}"}
    # The HTTP port is HTTPS when the certificate is configured: the scrape verifies it.
    assert job["scheme"] == "https" and job["tls_config"]["ca_file"] == f"/run/secrets/{ca}"


def test_every_variable_in_the_deploy_files_is_a_real_setting() -> None:
    for path in [ROOT / "Dockerfile", *DEPLOY.glob("docker-compose*.yml"), DEPLOY / "xtsdb.env"]:
        assert_known(xtsdb_names(path.read_text()), path.name)
    active = env_file(DEPLOY / "xtsdb.env")
    ServerConfig.load([], {**image_env(), **active})  # the combination is valid


# -- the entrypoint, run as the image runs it -----------------------------------------


def run_healthcheck(port: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [a.replace(":7878", f":{port}") for a in healthcheck_cmd()]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


class Image:
    """The image's entrypoint as a child process, with the image's environment.

    Only what a test must move is moved: files to a temp dir, ports to free ones,
    and the address to loopback (these tests use no other interface).
    """

    def __init__(self, tmp_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port, self.http_port = free_port(), free_port()
        env = server_env(**image_env())
        env.update(extra_env or {})
        env.update(
            XTSDB_DATA_DIR=str(tmp_path / "data"),
            XTSDB_BACKUP_DIR=str(tmp_path / "backups"),
            XTSDB_PORT=str(self.port),
            XTSDB_HTTP_PORT=str(self.http_port),
            XTSDB_HOST="127.0.0.1",
            XTSDB_CHUNK_SIZE="256KiB",  # a small first container, to start fast
            XTSDB_META_EXTENTS="1",
        )
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.env = env
        [entry] = args_of("ENTRYPOINT", runtime())
        cmd = exec_form(entry) + exec_form((args_of("CMD", runtime()) or ["[]"])[-1])
        # Found by its healthcheck, as Docker finds it, not by a ready file.
        self.srv = ServerProcess(workdir=tmp_path, env=env, command=cmd, ready_flag=False)
        self.log = self.srv.log_file

    def wait_healthy(self, check: Callable[[], subprocess.CompletedProcess[str]]) -> str:
        """Run ``check`` until it passes, as Docker does; its output."""
        deadline = time.monotonic() + START_TIMEOUT
        result = check()
        while result.returncode != 0:
            assert self.srv.running(), self.log.read_text()
            assert time.monotonic() < deadline, result.stderr + self.log.read_text()
            time.sleep(0.2)
            result = check()
        return result.stdout

    def stop(self) -> None:
        # SIGTERM: what `docker stop` sends to PID 1.
        assert self.srv.stop(START_TIMEOUT) == 0, self.log.read_text()

    def kill(self) -> None:
        self.srv.close()  # SIGKILL to this child only, if it still runs


def test_entrypoint_starts_and_answers_the_healthcheck(tmp_path: Path) -> None:
    image = Image(tmp_path)
    try:
        out = image.wait_healthy(lambda: run_healthcheck(image.port, image.env))
        assert out.startswith("pong from xtsdb://127.0.0.1:")
        url = f"http://127.0.0.1:{image.http_port}/readyz"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
        image.stop()
    finally:
        image.kill()
    assert run_healthcheck(image.port, image.env).returncode != 0  # stopped: unhealthy
    # stderr is not a terminal here, as in a container: the log lines are JSON.
    lines = [json.loads(line) for line in image.log.read_text().splitlines() if line.strip()]
    messages = [doc["msg"] for doc in lines]
    assert any(m.startswith("xtsdb listening on 127.0.0.1:") for m in messages), messages
    assert any("/metrics" in m for m in messages) and "received SIGTERM, stopping" in messages
    assert {doc["level"] for doc in lines} <= {"DEBUG", "INFO", "WARNING"}


def test_secure_variant_requires_tokens_and_its_healthcheck_passes(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    doc = yaml.safe_load((DEPLOY / "docker-compose.secure.yml").read_text())
    svc = doc["services"]["xtsdb"]
    # The secrets, made here, where the file names in the compose file say.
    secrets = {name: tmp_path / spec["file"] for name, spec in doc["secrets"].items()}
    assert set(svc["secrets"]) | set(doc["services"]["prometheus"]["secrets"]) == set(secrets)
    (tmp_path / "secrets").mkdir()
    read_secret = "read-secret-0123456789abcdef"
    secrets["xtsdb-tokens"].write_text(f"read:{read_secret}\nwrite:write-secret-0123456789ab\n")
    secrets["xtsdb-health-token"].write_text(read_secret + "\n")
    secrets["xtsdb-metrics-token"].write_text(read_secret + "\n")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(secrets["xtsdb-ca.pem"]))
    cert.private_key_pem.write_to_path(str(secrets["xtsdb-key.pem"]))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(secrets["xtsdb-cert.pem"]), append=True)
    for path in secrets.values():
        path.chmod(0o600)

    def local(text: str) -> str:  # /run/secrets/NAME is where compose mounts them
        for name, path in secrets.items():
            text = text.replace(f"/run/secrets/{name}", str(path))
        return text

    env = {k: local(str(v)) for k, v in svc["environment"].items()}
    assert_known(set(env), "docker-compose.secure.yml")
    # On the container's 0.0.0.0 the tokens, not ALLOW_REMOTE, make it acceptable.
    config = ServerConfig.load([], {**image_env(), **env})
    assert config.host == "0.0.0.0" and not config.allow_remote and config.tls_cert
    kind, shell = svc["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and "xtsdb " in shell and shell.rstrip().endswith("ping")
    shell = local(shell).replace("$$", "$")  # compose's escape for a literal $

    image = Image(tmp_path, env)
    try:

        def healthcheck() -> subprocess.CompletedProcess[str]:
            cmd = ["sh", "-c", shell.replace(":7878", f":{image.port}")]
            return subprocess.run(cmd, env=image.env, capture_output=True, text=True, timeout=30)

        assert image.wait_healthy(healthcheck).startswith("pong from xtsdbs://localhost:")
        # Without the token, or without TLS, the plain healthcheck fails.
        assert run_healthcheck(image.port, image.env).returncode != 0
        # /metrics wants the token Prometheus is given; the probe does not. The HTTP port
        # is HTTPS with the same certificate.
        url = f"https://localhost:{image.http_port}"
        tls = ssl.create_default_context(cafile=str(secrets["xtsdb-ca.pem"]))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/metrics", timeout=10, context=tls)
        assert refused.value.code == 401
        token = secrets["xtsdb-metrics-token"].read_text().strip()
        scrape = urllib.request.Request(
            f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(scrape, timeout=10, context=tls) as resp:
            assert resp.status == 200 and b"xtsdb_ready 1.0" in resp.read()
        with urllib.request.urlopen(f"{url}/readyz", timeout=10, context=tls) as resp:
            assert resp.status == 200
        image.stop()
    finally:
        image.kill()
    assert read_secret not in image.log.read_text()


COMPOSE = ["deploy/docker-compose.yml", "deploy/docker-compose.secure.yml"]


@pytest.mark.parametrize("path", ["Dockerfile", *COMPOSE, "deploy/xtsdb.env"])
def test_deploy_files_have_no_overlong_lines(path: str) -> None:
    for n, line in enumerate((ROOT / path).read_text().splitlines(), 1):
        assert len(line) <= 100, f"{path}:{n}"
