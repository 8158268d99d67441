"""``deploy/docker-compose.cluster.yml``, checked without a Docker engine.

The file is held to what the programs do: each xtsdb node's command goes
through the server's real argument parser (with the image's ENV and
``xtsdb.env``), and the NATS servers' commands are run for real with
``nats-server`` -- service names and container ports mapped to free loopback
ports, the volumes to temp dirs -- until each answers its compose healthcheck.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_program
from test_deploy import DEPLOY, ROOT, env_file, image_env, seconds

from xtsdb.client.cli import build_parser as cli_parser
from xtsdb.server.config import ServerConfig
from xtsdb.server.process import free_port

PATH = DEPLOY / "docker-compose.cluster.yml"
NATS = ["nats1", "nats2", "nats3"]
NODES = ["xtsdb1", "xtsdb2", "xtsdb3"]
NATS_CLIENT, NATS_ROUTE, NATS_HTTP = 4222, 6222, 8222


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(PATH.read_text())
    return doc


def flags(args: list[str]) -> dict[str, str]:
    """``--name=value`` arguments as a dict (``--flag`` alone: ``"true"``)."""
    out = {}
    for a in args:
        assert a.startswith("--"), a
        key, eq, value = a[2:].partition("=")
        out[key] = value if eq else "true"
    return out


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Mount target -> named volume."""
    return {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}


def test_nats_servers_form_one_jetstream_cluster() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {*NATS, *NODES}
    routes = {f"nats-route://{n}:{NATS_ROUTE}" for n in NATS}
    volumes = set()
    for name in NATS:
        svc = services[name]
        assert svc["image"].split(":")[0] == "nats"  # the official image
        f = flags(svc["command"])
        assert f["server_name"] == name and f["jetstream"] == "true"
        assert f["cluster_name"] == "xtsdb" and f["cluster"] == f"nats://0.0.0.0:{NATS_ROUTE}"
        assert set(f["routes"].split(",")) == routes
        assert "port" not in f  # clients (the xtsdb nodes) use the default port
        volumes.add(mounts(svc)[f["store_dir"]])  # the store is on a named volume
        assert int(f["http_port"]) == NATS_HTTP
        hc = svc["healthcheck"]
        assert hc["test"][-1] == f"http://127.0.0.1:{NATS_HTTP}/healthz?js-enabled-only=true"
        assert svc["restart"] == "unless-stopped" and "ports" not in svc  # not published
    assert len(volumes) == 3 and volumes <= set(doc["volumes"])


def test_xtsdb_nodes_parse_with_the_servers_own_parser() -> None:
    doc = compose()
    services = doc["services"]
    env = {**image_env(), **env_file(DEPLOY / svc_env(services))}
    urls = tuple(f"nats://{n}:{NATS_CLIENT}" for n in NATS)
    configs = []
    host_ports = []
    standalone = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["xtsdb"]
    for name in NODES:
        svc = services[name]
        config = ServerConfig.load(svc["command"], env)  # raises on any bad flag or value
        configs.append(config)
        assert config.cluster == urls and config.node_id == name
        assert config.host == "0.0.0.0" and config.port == int(env["XTSDB_PORT"])
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        data = mounts(svc)
        assert data["/var/lib/xtsdb"] in doc["volumes"] and str(config.data_dir) == "/var/lib/xtsdb"
        assert svc["healthcheck"]["test"] == standalone["healthcheck"]["test"]
        cli = cli_parser().parse_args(svc["healthcheck"]["test"][2:])
        assert cli.command == "ping" and cli.url.endswith(f":{config.port}")
        assert seconds(svc["healthcheck"]["start_period"]) >= 60
        assert svc["depends_on"] == {n: {"condition": "service_healthy"} for n in NATS}
        for port in svc["ports"]:
            assert port.startswith("127.0.0.1:"), port
            host_ports.append(port.split(":")[1])
        assert seconds(svc["stop_grace_period"]) >= config.shutdown_timeout + 20
    assert len(set(host_ports)) == len(host_ports) == 6
    assert len({mounts(services[n])["/var/lib/xtsdb"] for n in NODES}) == 3  # one volume each
    # Cluster-wide settings must agree, or the nodes would disagree on placement.
    assert len({(c.shards, c.replication) for c in configs}) == 1
    assert 1 < configs[0].replication <= len(NODES)


def svc_env(services: dict[str, Any]) -> str:
    [name] = {services[n]["env_file"] for n in NODES}
    assert isinstance(name, str)
    return name


def test_no_overlong_lines() -> None:
    for n, line in enumerate(PATH.read_text().splitlines(), 1):
        assert len(line) <= 100, f"{PATH.relative_to(ROOT)}:{n}"


# -- the NATS services run as compose states them ---------------------------------------


@pytest.fixture
def nats_from_compose(tmp_path: Path) -> Iterator[dict[str, int]]:
    """The three NATS services started from their compose commands; service -> the
    loopback port of its healthcheck."""
    program = require_program("nats-server", "nats-server")
    services = compose()["services"]
    port = {(n, p): free_port() for n in NATS for p in (NATS_CLIENT, NATS_ROUTE, NATS_HTTP)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name in NATS:
            args = []
            for a in services[name]["command"]:
                for other in NATS:  # a service name and container port -> loopback and free port
                    a = a.replace(f"{other}:{NATS_ROUTE}", f"127.0.0.1:{port[other, NATS_ROUTE]}")
                a = a.replace(f"0.0.0.0:{NATS_ROUTE}", f"127.0.0.1:{port[name, NATS_ROUTE]}")
                a = a.replace(f"--http_port={NATS_HTTP}", f"--http_port={port[name, NATS_HTTP]}")
                store = mounts(services[name]).get(a.partition("=")[2])
                if a.startswith("--store_dir=") and store is not None:
                    a = f"--store_dir={tmp_path / store}"
                args.append(a)
            assert not any(f"{n}:" in a for a in args for n in NATS), args  # all mapped
            args += ["--addr=127.0.0.1", f"--port={port[name, NATS_CLIENT]}"]
            log = (tmp_path / f"{name}.log").open("wb")
            procs.append(subprocess.Popen([program, *args], stdout=log, stderr=subprocess.STDOUT))
            log.close()
        yield {name: port[name, NATS_HTTP] for name in NATS}
    finally:
        for proc in procs:
            proc.kill()  # by its own pid
            proc.wait(10)


def test_nats_commands_run_and_pass_their_healthcheck(nats_from_compose: dict[str, int]) -> None:
    services = compose()["services"]
    for name, port in nats_from_compose.items():
        url = services[name]["healthcheck"]["test"][-1].replace(f":{NATS_HTTP}/", f":{port}/")
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    assert resp.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):  # starting, or no meta leader yet
                assert time.monotonic() < deadline, f"{name} never healthy"
                time.sleep(0.1)
        jsz = urllib.request.urlopen(url.split("/healthz")[0] + "/jsz", timeout=2)
        with jsz as resp:
            meta = json.loads(resp.read())["meta_cluster"]
        assert meta["cluster_size"] == 3 and meta["name"] == "xtsdb", meta  # one cluster of 3
