"""The example deployment files (deploy/, explained in docs/scaling.md): no engine runs them here, so check what can
be checked — valid YAML, modelmux configs that modelmux accepts, `modelmux` arguments its parser accepts, names and
ports that refer to each other, an nginx.conf whose blocks and statements are well formed."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from modelmux.cli import build_parser
from modelmux.config import parse_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ENV = {"REDIS_PASSWORD": "pw", "TEAM_A_KEY": "sk-team-a"}


def _port_of_mode(args: list[str]) -> int:
    mode = args[args.index("--mode") + 1]
    return int(mode.rsplit("@", 1)[1])


def _check_modelmux_args(args: list[str]) -> None:
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run" and parsed.listen_host == "0.0.0.0"


def test_kubernetes_manifests():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "modelmux.yaml").read_text()))
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(by_kind) == {("ConfigMap", "modelmux-config"), ("Deployment", "modelmux"), ("Service", "modelmux"),
                            ("StatefulSet", "modelmux-redis"), ("Service", "modelmux-redis")}
    for d in docs:
        assert d["apiVersion"] in ("v1", "apps/v1")
    config = parse_config(yaml.safe_load(by_kind[("ConfigMap", "modelmux-config")]["data"]["modelmux.yaml"]), ENV)
    assert config.state.url == "redis://:pw@modelmux-redis:6379/0"
    assert config.security.clients[0].name == "team-a"

    deployment = by_kind[("Deployment", "modelmux")]["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["selector"]["matchLabels"] == deployment["template"]["metadata"]["labels"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    _check_modelmux_args(container["args"])
    port = _port_of_mode(container["args"])
    assert container["ports"][0]["containerPort"] == port
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"] for v in pod["volumes"]}
    assert set(mounts.values()) <= volumes
    config_arg = container["args"][container["args"].index("--config") + 1]
    assert str(Path(config_arg).parent) in mounts
    assert config.auth.credentials_file.rsplit("/", 1)[0] in mounts
    env = {e["name"] for e in container["env"]}
    assert {"REDIS_PASSWORD", "TEAM_A_KEY"} <= env  # every ${VAR} the config uses
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"

    service = by_kind[("Service", "modelmux")]["spec"]
    assert service["selector"] == deployment["template"]["metadata"]["labels"]
    assert service["ports"][0]["targetPort"] == container["ports"][0]["name"]

    redis = by_kind[("StatefulSet", "modelmux-redis")]["spec"]
    redis_args = redis["template"]["spec"]["containers"][0]["args"]
    assert redis_args[redis_args.index("--maxmemory-policy") + 1] == "noeviction"  # docs/scaling.md: must not evict
    assert "$(REDIS_PASSWORD)" in redis_args
    redis_service = by_kind[("Service", "modelmux-redis")]["spec"]
    assert redis_service["selector"] == redis["template"]["metadata"]["labels"]
    assert redis_service["ports"][0]["port"] == 6379


def test_compose_file_and_nginx():
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"modelmux-1", "modelmux-2", "nginx", "redis"}
    assert services["modelmux-1"] == services["modelmux-2"]  # one anchor, two replicas
    replica = services["modelmux-1"]
    _check_modelmux_args(replica["command"])
    port = _port_of_mode(replica["command"])
    assert replica["build"]["dockerfile"] == "deploy/Dockerfile" and (DEPLOY / "Dockerfile").exists()
    mounted = {v.split(":")[0]: v.split(":")[1] for v in replica["volumes"]}
    assert mounted["./modelmux.yaml"] == replica["command"][replica["command"].index("--config") + 1]
    config = parse_config(yaml.safe_load((DEPLOY / "compose" / "modelmux.yaml").read_text()), ENV)
    assert config.state.url == "redis://:pw@redis:6379/0"
    assert config.auth.credentials_file in mounted.values()
    assert set(ENV) <= set(replica["environment"])
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"

    nginx = (DEPLOY / "compose" / "nginx.conf").read_text()
    assert services["nginx"]["volumes"] == ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    code = "\n".join(line.split("#", 1)[0] for line in nginx.splitlines())
    assert code.count("{") == code.count("}")
    for line in code.splitlines():
        line = line.strip()
        assert not line or line.endswith(("{", "}", ";")), line
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", code, re.M)
    assert sorted(upstreams) == [("modelmux-1", str(port)), ("modelmux-2", str(port))]
    assert "proxy_buffering off;" in code  # streams leave as they arrive
    listen = re.search(r"listen\s+(\d+);", code).group(1)
    assert services["nginx"]["ports"] == [f"127.0.0.1:{listen}:{listen}"]
