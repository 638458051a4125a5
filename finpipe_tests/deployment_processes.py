"""Run finpipe's Dagster deployment as local processes: what docker/docker-compose.yml starts.

A code server (`dagster code-server start`), `dagster-webserver` and `dagster-daemon run`, on
127.0.0.1, sharing one environment: the repo's dagster.yaml in a temporary DAGSTER_HOME,
PostgreSQL settings, the code server's address for workspace.yaml, and finpipe's own
variables. Every wait is bounded; every process is stopped on exit, with its process group
(run workers included); on failure the processes' log tails are printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from finpipe.serving.dagster_client import LAUNCH_RUN, LOCATION, REPOSITORY, RUN
from finpipe_tests.postgres_server import PostgresServer, free_port

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
MODULE = "finpipe.definitions"
# workspace.yaml reads the code server's address from these.
CODE_SERVER_HOST_ENV = "DAGSTER_CODE_SERVER_HOST"
CODE_SERVER_PORT_ENV = "DAGSTER_CODE_SERVER_PORT"
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


def code_server_command(host: str, port: int) -> list[str]:
    """The user-code gRPC server (the compose service `finpipe_user_code`)."""
    return [
        "dagster", "code-server", "start", "-h", host, "-p", str(port),
        "-m", MODULE, "--location-name", LOCATION,
    ]  # fmt: skip


def code_server_health_command(port: int) -> list[str]:
    """Exits 0 once the code server answers: compose's healthcheck and the tests' wait."""
    return ["dagster", "api", "grpc-health-check", "-p", str(port)]


def webserver_command(host: str, port: int, workspace: str) -> list[str]:
    """The UI and GraphQL API (the compose service `dagster_webserver`)."""
    return ["dagster-webserver", "-h", host, "-p", str(port), "-w", workspace]


def daemon_command(workspace: str) -> list[str]:
    """Schedules, sensors and the run queue (the compose service `dagster_daemon`)."""
    return ["dagster-daemon", "run", "-w", workspace]


def api_command(host: str, port: int) -> list[str]:
    """The prediction service (the compose service `finpipe_api`)."""
    return ["finpipe", "serve", "--host", host, "--port", str(port)]


def module_command(argv: list[str]) -> list[str]:
    """A `finpipe ...` command through `python -m` (the console script's module), so that it
    runs the code on PYTHONPATH without reinstalling the package."""
    assert argv[0] == "finpipe", argv
    return ["python", "-m", "finpipe.serving.cli", *argv[1:]]


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll `check` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


@dataclass
class ManagedProcess:
    """A started process in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the group (children too), SIGKILL to what is left after `grace_s`."""
        pgid = self.popen.pid  # start_new_session: the process leads its own group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                continue
            if not group_alive(pgid):
                return
            time.sleep(1.0)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


RUNS_WITH_TAG = """
query($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    ... on Runs { results { runId jobName status tags { key value } } }
  }
}
"""

RUN_ERRORS = """
query($runId: ID!) {
  logsForRun(runId: $runId, limit: 10000) {
    ... on EventConnection { events { __typename
      ... on MessageEvent { message level } ... on ErrorEvent { error { message } } } }
  }
}
"""

TERMINATE_RUN = """
mutation($runId: String!) {
  terminateRun(runId: $runId, terminatePolicy: SAFE_TERMINATE) {
    __typename ... on TerminateRunFailure { message } ... on PythonError { message }
  }
}
"""

TICK_FIELDS = "tickId status timestamp skipReason runIds runKeys error { message }"

SCHEDULE_STATE = f"""
query($selector: ScheduleSelector!) {{
  scheduleOrError(scheduleSelector: $selector) {{
    __typename
    ... on Schedule {{ scheduleState {{ id status ticks(limit: 50) {{ {TICK_FIELDS} }} }} }}
  }}
}}
"""

SENSOR_STATE = f"""
query($selector: SensorSelector!) {{
  sensorOrError(sensorSelector: $selector) {{
    __typename
    ... on Sensor {{ sensorState {{ id status ticks(limit: 50) {{ {TICK_FIELDS} }} }} }}
  }}
}}
"""

STOP_SCHEDULE = """
mutation($id: String!) {
  stopRunningSchedule(id: $id) {
    __typename ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}
"""

LATEST_MATERIALIZATION = """
query($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetMaterializations(limit: 1) { runId partition metadataEntries { label
      ... on BoolMetadataEntry { boolValue } ... on TextMetadataEntry { text }
      ... on TableSchemaMetadataEntry { schema { columns { name type } } } } } }
  }
}
"""

ASSET_NODES = "query { assetNodes { assetKey { path } groupName jobNames } }"


@dataclass
class DagsterApi:
    """The webserver's GraphQL API (POST /graphql), with the calls the tests make."""

    url: str
    timeout: float = 60.0

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            self.url, json={"query": query, "variables": variables or {}}, timeout=self.timeout
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def launch_run(
        self, job: str, run_config: dict[str, Any], assets: list[str] | None = None
    ) -> str:
        """Submit a run of `job` (or of its `assets` only) to the queue; its id."""
        selector: dict[str, Any] = {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": job,
        }
        if assets:
            selector["assetSelection"] = [{"path": [key]} for key in assets]
        params = {"selector": selector, "runConfigData": run_config}
        result = self.query(LAUNCH_RUN, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {job} failed: {result}")
        return result["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        """runId, jobName, status, startTime, endTime and tags (as a dict) of a run."""
        run = self.query(RUN, {"runId": run_id})["runOrError"]
        if run["__typename"] != "Run":
            raise RuntimeError(f"run {run_id}: {run}")
        return {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}}

    def runs_with_tag(self, key: str, value: str) -> list[dict[str, Any]]:
        return self.query(RUNS_WITH_TAG, {"key": key, "value": value})["runsOrError"]["results"]

    def run_errors(self, run_id: str) -> list[str]:
        """Messages of the run's error events and error-level logs."""
        events = self.query(RUN_ERRORS, {"runId": run_id})["logsForRun"]["events"]
        return [
            (event.get("error") or {}).get("message") or event.get("message", "")
            for event in events
            if event.get("error") or event.get("level") in ("ERROR", "CRITICAL")
        ]

    def terminate_run(self, run_id: str, timeout: float = 60.0) -> None:
        """Terminate a queued or running run. A run the queue has just handed to its
        launcher (STARTING) cannot be terminated yet: try again until it has started."""

        def terminated() -> bool:
            result = self.query(TERMINATE_RUN, {"runId": run_id})["terminateRun"]
            if result["__typename"] == "TerminateRunSuccess":
                return True
            if "status STARTING" in result.get("message", ""):
                return False
            raise RuntimeError(f"terminating run {run_id} failed: {result}")

        wait_until(f"run {run_id} to be terminable", terminated, timeout, interval=0.5)

    def schedule_state(self, name: str) -> dict[str, Any]:
        """id, status and latest ticks (newest first) of a schedule."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        data = self.query(SCHEDULE_STATE, {"selector": {**selector, "scheduleName": name}})
        return data["scheduleOrError"]["scheduleState"]

    def sensor_state(self, name: str) -> dict[str, Any]:
        """id, status and latest ticks (newest first) of a sensor."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        data = self.query(SENSOR_STATE, {"selector": {**selector, "sensorName": name}})
        return data["sensorOrError"]["sensorState"]

    def stop_schedule(self, name: str) -> None:
        state_id = self.schedule_state(name)["id"]
        result = self.query(STOP_SCHEDULE, {"id": state_id})["stopRunningSchedule"]
        if result["__typename"] != "ScheduleStateResult":
            raise RuntimeError(f"stopping schedule {name} failed: {result}")

    def latest_materialization(self, asset: str) -> dict[str, Any]:
        """runId, partition and metadata (label -> value; a column schema as its column
        names and types) of the asset's latest materialization."""
        asset_data = self.query(LATEST_MATERIALIZATION, {"path": [asset]})["assetOrError"]
        (event,) = asset_data["assetMaterializations"]
        metadata = {
            entry["label"]: entry["schema"]["columns"]
            if "schema" in entry
            else entry.get("boolValue", entry.get("text"))
            for entry in event["metadataEntries"]
        }
        return {"runId": event["runId"], "partition": event["partition"], "metadata": metadata}

    def asset_nodes(self) -> list[dict[str, Any]]:
        return self.query(ASSET_NODES)["assetNodes"]


@dataclass
class Deployment:
    """The running processes, their shared environment and the webserver's API."""

    workdir: Path
    env: dict[str, str]
    webserver_port: int
    code_server_port: int
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def webserver_url(self) -> str:
        return f"http://127.0.0.1:{self.webserver_port}"

    @property
    def api(self) -> DagsterApi:
        return DagsterApi(f"{self.webserver_url}/graphql")

    def start(self, name: str, argv: list[str]) -> ManagedProcess:
        """Start `argv` with the deployment's environment (see `start_process`)."""
        process = start_process(self.workdir, self.env, name, argv)
        self.processes.append(process)
        return process

    def check_alive(self) -> None:
        """Raise if a deployment process has exited."""
        for process in self.processes:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.log_tail()}"
                )

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """`wait_until`, failing early when a process dies; a timeout carries the logs."""

        def alive_and_checked() -> Any:
            self.check_alive()
            return check()

        try:
            return wait_until(what, alive_and_checked, timeout)
        except TimeoutError as err:
            raise TimeoutError(f"{err}; process logs:\n{self.logs()}") from None

    def wait_for_run(self, run_id: str, timeout: float = 300.0) -> dict[str, Any]:
        """The run once it is SUCCESS, FAILURE or CANCELED (failures carry `errors`)."""

        def finished() -> dict[str, Any] | None:
            run = self.api.run(run_id)
            return run if run["status"] in TERMINAL_RUN_STATUSES else None

        run = self.wait_for(f"run {run_id} to finish", finished, timeout)
        if run["status"] == "FAILURE":
            run["errors"] = self.api.run_errors(run_id)
        return run

    def wait_for_ticks(
        self,
        ticks: Callable[[], list[dict[str, Any]]],
        since: float,
        until: float,
        timeout: float = 120.0,
    ) -> list[dict[str, Any]]:
        """Finished ticks that started after `since` (Unix time), oldest first, once one has
        started after `until`: every evaluation up to `until` is then among them."""

        def finished_past_until() -> list[dict[str, Any]] | None:
            done = [t for t in ticks() if t["timestamp"] > since and t["status"] != "STARTED"]
            done.sort(key=lambda t: t["timestamp"])
            return done if done and done[-1]["timestamp"] > until else None

        return self.wait_for("the next tick", finished_past_until, timeout)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(
            f"----- {p.name} (pid {p.popen.pid}, exit {p.popen.poll()}) -----\n{p.log_tail()}"
            for p in self.processes
        )


def start_process(workdir: Path, env: dict[str, str], name: str, argv: list[str]) -> ManagedProcess:
    """Start `argv` (its program taken from this virtualenv) in a new process group, logging to
    `workdir/logs/<name>.log`."""
    log_path = workdir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [str(VENV_BIN / argv[0]), *argv[1:]],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(name, popen, log_path)


@contextmanager
def api_service(
    workdir: Path, env: dict[str, str], name: str = "api", timeout: float = 90
) -> Iterator[tuple[str, ManagedProcess]]:
    """`finpipe serve` on a free loopback port with `env`; (its URL, the process) once it
    answers, stopped on exit."""
    port = free_port()
    process = start_process(workdir, env, name, module_command(api_command("127.0.0.1", port)))
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if not process.alive():
            raise RuntimeError(f"{name} exited:\n{process.log_tail()}")
        try:
            return requests.get(f"{url}/openapi.json", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(f"the prediction service {name}", answers, timeout, interval=0.25)
        yield url, process
    except BaseException:
        print(f"{name} log:\n{process.log_tail()}", file=sys.stderr)
        raise
    finally:
        process.stop()


def deployment_env(
    server: PostgresServer, dagster_home: Path, code_server_port: int, extra: dict[str, str]
) -> dict[str, str]:
    """One environment for every process, as compose's shared `environment` block."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "FINPIPE_"))}
    env.update(server.env())
    env.update(
        {
            "DAGSTER_HOME": str(dagster_home),
            CODE_SERVER_HOST_ENV: "127.0.0.1",
            CODE_SERVER_PORT_ENV: str(code_server_port),
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def code_server_healthy(deployment: Deployment) -> bool:
    if not port_open(deployment.code_server_port):
        return False
    argv = code_server_health_command(deployment.code_server_port)
    result = subprocess.run(
        [str(VENV_BIN / argv[0]), *argv[1:]],
        env=deployment.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0


LOCATION_STATUS = """
query {
  workspaceOrError {
    ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } }
  }
}
"""

DAEMON_HEALTH = """
query {
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
}
"""


def location_loaded(api: DagsterApi) -> bool:
    entries = api.query(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
    entry = next((e for e in entries if e["name"] == LOCATION), None)
    if entry is None or entry["loadStatus"] != "LOADED":
        return False
    loaded = entry["locationOrLoadError"]
    if loaded["__typename"] == "PythonError":
        raise RuntimeError(f"code location {LOCATION} failed to load: {loaded['message']}")
    return True


def webserver_ready(deployment: Deployment) -> bool:
    try:
        return location_loaded(deployment.api)
    except requests.ConnectionError:
        return False


def daemons_healthy(api: DagsterApi) -> bool:
    statuses = api.query(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = [s for s in statuses if s["required"]]
    return bool(required) and all(s["healthy"] for s in required)


@contextmanager
def local_deployment(
    server: PostgresServer, workdir: Path, extra_env: dict[str, str], start_timeout: float = 180
) -> Iterator[Deployment]:
    """Code server, webserver and daemon on loopback with the repo's dagster.yaml and
    workspace.yaml; ready (location loaded, daemons healthy) when yielded, stopped on exit."""
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    workspace = str(REPO / "workspace.yaml")
    code_server_port, webserver_port = free_port(), free_port()
    env = deployment_env(server, dagster_home, code_server_port, extra_env)
    deployment = Deployment(workdir, env, webserver_port, code_server_port)
    try:
        deployment.start("code_server", code_server_command("127.0.0.1", code_server_port))
        deployment.wait_for(
            "the code server", lambda: code_server_healthy(deployment), start_timeout
        )
        deployment.start("webserver", webserver_command("127.0.0.1", webserver_port, workspace))
        deployment.start("daemon", daemon_command(workspace))
        deployment.wait_for(
            "the webserver to load the code location",
            lambda: webserver_ready(deployment),
            start_timeout,
        )
        deployment.wait_for(
            "the daemons' heartbeats", lambda: daemons_healthy(deployment.api), start_timeout
        )
        yield deployment
    except BaseException:
        print(f"deployment process logs:\n{deployment.logs()}", file=sys.stderr)
        raise
    finally:
        deployment.stop_all()
