"""docker/docker-compose.yml agrees with dagster.yaml, docker/dagster.yaml, workspace.yaml, the
Dockerfiles, the commands the deployment test runs and the README's deployment section."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from finpipe.serving.settings import ENV as API_ENV
from finpipe_tests.deployment_processes import (
    CODE_SERVER_HOST_ENV,
    CODE_SERVER_PORT_ENV,
    LOCATION,
    api_command,
    code_server_command,
    code_server_health_command,
    daemon_command,
    webserver_command,
)

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
SERVICES = {
    "postgres",
    "finpipe_user_code",
    "dagster_webserver",
    "dagster_daemon",
    "mlflow",
    "finpipe_api",
}
MLFLOW_ENV = {"MLFLOW_TRACKING_URI", "FINPIPE_MLFLOW_ARTIFACTS", "FINPIPE_MLFLOW_UI_URL"}
DAGSTER_SERVICES = ("finpipe_user_code", "dagster_webserver", "dagster_daemon")
STORAGE_ENV = {
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
}


def load_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(DOCKER / "docker-compose.yml")


@pytest.fixture(scope="module")
def root_instance() -> dict[str, Any]:
    return load_yaml(REPO / "dagster.yaml")


@pytest.fixture(scope="module")
def docker_instance() -> dict[str, Any]:
    return load_yaml(DOCKER / "dagster.yaml")


@pytest.fixture(scope="module")
def grpc_server() -> dict[str, Any]:
    (location,) = load_yaml(REPO / "workspace.yaml")["load_from"]
    return location["grpc_server"]


def env_names(node: Any) -> set[str]:
    """Every variable a Dagster config tree reads with `{env: NAME}`."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_names(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_names(value) for value in node))
    return set()


def service_env(compose: dict[str, Any], name: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose["services"][name].get("environment", {}).items()}


def published_port(compose: dict[str, Any], name: str, port: int) -> bool:
    return f"{port}:{port}" in compose["services"][name].get("ports", [])


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / name).read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile_cmd(name: str) -> list[str]:
    (cmd,) = [json.loads(args) for instruction, args in dockerfile(name) if instruction == "CMD"]
    return cmd


def test_compose_runs_postgres_the_code_server_the_webserver_the_daemon_mlflow_and_the_api(
    compose: dict[str, Any],
) -> None:
    assert set(compose["services"]) == SERVICES


def test_both_instance_files_agree_but_for_the_run_launcher(
    root_instance: dict[str, Any], docker_instance: dict[str, Any]
) -> None:
    assert set(root_instance) == set(docker_instance)
    for section in root_instance.keys() - {"run_launcher"}:
        assert root_instance[section] == docker_instance[section], section
    assert root_instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert root_instance["run_launcher"]["class"] == "DefaultRunLauncher"
    assert docker_instance["run_launcher"]["class"] == "DockerRunLauncher"
    assert env_names(root_instance) == env_names(docker_instance["storage"]) == STORAGE_ENV


def test_every_dagster_service_gets_what_the_storage_config_reads(compose: dict[str, Any]) -> None:
    database = service_env(compose, "postgres")
    for name in DAGSTER_SERVICES:
        env = service_env(compose, name)
        assert env.keys() >= STORAGE_ENV, name
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert env["DAGSTER_PG_PORT"] == "5432"  # the postgres image's port
        assert env["DAGSTER_PG_USERNAME"] == database["POSTGRES_USER"]
        assert env["DAGSTER_PG_PASSWORD"] == database["POSTGRES_PASSWORD"]
        assert env["DAGSTER_PG_DB"] == database["POSTGRES_DB"]


def test_run_containers_get_the_storage_settings_network_and_data_volume(
    compose: dict[str, Any], docker_instance: dict[str, Any]
) -> None:
    launcher = docker_instance["run_launcher"]["config"]
    daemon, code = service_env(compose, "dagster_daemon"), service_env(compose, "finpipe_user_code")
    # The launcher copies these from the daemon's environment; the run needs them all.
    assert set(launcher["env_vars"]) >= STORAGE_ENV | MLFLOW_ENV | {"FINPIPE_DATA_ROOT"}
    assert daemon.keys() >= set(launcher["env_vars"])
    assert daemon["FINPIPE_DATA_ROOT"] == code["FINPIPE_DATA_ROOT"]

    networks = {key: spec["name"] for key, spec in compose["networks"].items()}
    (network,) = [key for key, name in networks.items() if name == launcher["network"]]
    assert all(network in service["networks"] for service in compose["services"].values())

    volumes = {(spec or {}).get("name"): key for key, spec in compose["volumes"].items()}
    (mount,) = launcher["container_kwargs"]["volumes"]
    volume_name, path = mount.split(":")
    assert path == daemon["FINPIPE_DATA_ROOT"]
    assert f"{volumes[volume_name]}:{path}" in compose["services"]["finpipe_user_code"]["volumes"]


def test_mlflow_serves_the_store_every_run_writes_to(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    code = compose["services"]["finpipe_user_code"]
    shared = service_env(compose, "finpipe_user_code")
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and mlflow["image"] == code["image"]
    assert command[command.index("--backend-store-uri") + 1] == shared["MLFLOW_TRACKING_URI"]
    artifacts = command[command.index("--default-artifact-root") + 1]
    assert artifacts == shared["FINPIPE_MLFLOW_ARTIFACTS"]
    assert artifacts.startswith(shared["FINPIPE_DATA_ROOT"] + "/")
    assert set(mlflow["volumes"]) & set(code["volumes"])  # the data volume, at the same path
    database = shared["MLFLOW_TRACKING_URI"].rsplit("/", 1)[1]
    (init,) = [v for v in compose["services"]["postgres"]["volumes"] if "initdb" in v]
    sql = (DOCKER / init.split(":")[0]).read_text()
    assert f"CREATE DATABASE {database}" in sql
    assert published_port(compose, "mlflow", 5000)
    assert shared["FINPIPE_MLFLOW_UI_URL"].endswith(":5000")
    for name in DAGSTER_SERVICES:
        assert service_env(compose, name).keys() >= MLFLOW_ENV, name


def test_the_api_serves_the_data_and_registry_the_runs_write_on_loopback(
    compose: dict[str, Any],
) -> None:
    api, code = compose["services"]["finpipe_api"], compose["services"]["finpipe_user_code"]
    env, shared = service_env(compose, "finpipe_api"), service_env(compose, "finpipe_user_code")
    assert api["image"] == code["image"]
    assert api["command"] == api_command("0.0.0.0", 8000)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["finpipe"] == "finpipe.serving.cli:main"
    assert api["ports"] == ["127.0.0.1:8000:8000"]  # the host's loopback only
    for name in ("FINPIPE_DATA_ROOT", "MLFLOW_TRACKING_URI"):
        assert env[name] == shared[name], name
    assert f"{shared['FINPIPE_DATA_ROOT']}:ro" in [v.split(":", 1)[1] for v in api["volumes"]]
    webserver = webserver_command("0.0.0.0", 3000, "workspace.yaml")
    port = webserver[webserver.index("-p") + 1]
    assert env["FINPIPE_DAGSTER_URL"] == f"http://dagster_webserver:{port}"
    assert set(env) <= set(API_ENV.values())
    assert env["FINPIPE_API_KEYS"] == "${FINPIPE_API_KEYS:-}"  # from the shell or .env


def test_workspace_points_at_the_code_server_service(
    compose: dict[str, Any], grpc_server: dict[str, Any]
) -> None:
    assert grpc_server["host"] == {"env": CODE_SERVER_HOST_ENV}
    assert grpc_server["port"] == {"env": CODE_SERVER_PORT_ENV}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert (
        grpc_server["location_name"]
        == LOCATION
        == pyproject["tool"]["dagster"]["code_location_name"]
    )
    port = int(service_env(compose, "dagster_daemon")[CODE_SERVER_PORT_ENV])
    for name in ("dagster_webserver", "dagster_daemon"):
        env = service_env(compose, name)
        assert env[CODE_SERVER_HOST_ENV] == "finpipe_user_code"
        assert int(env[CODE_SERVER_PORT_ENV]) == port
    command = compose["services"]["finpipe_user_code"]["command"]
    assert command[command.index("-p") + 1] == str(port)  # the code server listens there


def test_services_run_the_commands_the_deployment_test_runs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    code = services["finpipe_user_code"]
    port = int(service_env(compose, "finpipe_user_code")[CODE_SERVER_PORT_ENV])
    assert code["command"] == code_server_command("0.0.0.0", port) == dockerfile_cmd("Dockerfile")
    assert code["healthcheck"]["test"] == ["CMD", *code_server_health_command(port)]
    assert service_env(compose, "finpipe_user_code")["DAGSTER_CURRENT_IMAGE"] == code["image"]
    webserver = webserver_command("0.0.0.0", 3000, "workspace.yaml")
    assert services["dagster_webserver"]["command"] == webserver
    assert dockerfile_cmd("Dockerfile.dagster") == webserver
    assert published_port(compose, "dagster_webserver", 3000)
    assert services["dagster_daemon"]["command"] == daemon_command("workspace.yaml")
    for name in DAGSTER_SERVICES[1:]:
        assert services[name]["depends_on"]["finpipe_user_code"]["condition"] == "service_healthy"


def test_images_hold_the_files_the_services_read(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == REPO and (context / service["build"]["dockerfile"]).is_file()
    for name in ("Dockerfile", "Dockerfile.dagster"):
        assert ("COPY", 'docker/dagster.yaml "$DAGSTER_HOME/dagster.yaml"') in dockerfile(name)
    instructions = dockerfile("Dockerfile.dagster")
    workdir = instructions.index(("WORKDIR", "/opt/dagster/app"))
    assert instructions.index(("COPY", "workspace.yaml ./")) > workdir  # `-w workspace.yaml`


def test_readme_deployment_section_matches_the_files(compose: dict[str, Any]) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]
    shared = service_env(compose, "dagster_daemon")
    commands = ["dagster code-server start", "dagster-webserver", "dagster-daemon run"]
    scale_out = ["K8sRunLauncher", "k8s_job_executor", "nvidia.com/gpu"]
    words = [*SERVICES, *shared, *commands, *scale_out, "docker/docker-compose.yml", "3000"]
    for word in [*words, *API_ENV.values(), "finpipe serve", "8000"]:
        assert word in section, word
