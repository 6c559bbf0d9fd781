"""The local test bed: a real Kubernetes control plane, KubeRay, MinIO, FerretDB, a Ray head, kwok
nodes and one real node (containerd, kubelet, kube-proxy, CoreDNS; see node.py).

Every component is a local process started from the binaries `make tools` built (or, for Ray,
from the project venv). Components listen on 127.0.0.1, except those pods must reach (the API
server, MinIO, FerretDB, CoreDNS, the kubelet), which listen on the real node's host-only bridge. Each runs in its own process group, logs to ``<dir>/logs/<name>.log``
and is recorded in ``<dir>/state.json`` so that ``down`` (or a later run) can stop exactly what
was started, even after the starting process has gone. A bed started by ``up()`` dies with the
process that called it (see watchdog.py); ``make cluster-up``'s outlives its command.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import mlflow_server, node, watchdog
from .certs import Pki, make_pki
from .tools import REPO_ROOT, Tools

LOOPBACK = "127.0.0.1"
MINIO_USER = "modeleval"
GPU_RESOURCE = "nvidia.com/gpu"
# Ray resolves 127.0.0.1 to the machine's routable address unless told it is a one-machine
# cluster; with this every Ray process (and every client of it) stays on loopback.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
GPUS_PER_GPU_NODE = 2
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


class BedError(RuntimeError):
    """A component failed to start; the message names it and points at its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class Endpoints:
    """Everything a client needs to reach the test bed; written to state.json and bed.env."""

    dir: str
    kubeconfig: str
    apiserver: str
    etcd: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    mongodb_uri: str
    ray_address: str
    ray_dashboard: str
    ray_auth_token: str
    kuberay_metrics: str
    kuberay_health: str
    kubernetes_version: str
    # The address pods reach the host's services at, and the real node's name.
    host_ip: str = node.HOST_IP
    real_node: str = node.NODE_NAME
    # The MLflow tracking server (basic auth; its admin's credentials), when the bed was asked
    # for one (TestBed(mlflow=True)); empty otherwise.
    mlflow_uri: str = ""
    mlflow_admin_password: str = ""
    logs: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """Environment a client (kubectl, boto3, pymongo, ray, modeleval) uses to reach the bed."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "MODELEVAL_BED_DIR": self.dir,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MODELEVAL_MONGODB_URI": self.mongodb_uri,
            "RAY_ADDRESS": self.ray_address,
            "MODELEVAL_RAY_DASHBOARD": self.ray_dashboard,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.ray_auth_token,
            **RAY_LOOPBACK_ENV,
            **({"MLFLOW_TRACKING_URI": self.mlflow_uri,
                "MLFLOW_TRACKING_USERNAME": mlflow_server.ADMIN_USER,
                "MLFLOW_TRACKING_PASSWORD": self.mlflow_admin_password} if self.mlflow_uri else {}),
        }


class TestBed:
    """Starts and stops the components. Use ``up()`` / ``down()`` or as a context manager."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path, tools: Tools | None = None, ray_cpus: int = 2,
                 ray_auth_token: str | None = None, mlflow: bool = False):
        self.dir = directory.resolve()
        # Ray reads its token once per process: a caller that imports ray before the bed starts
        # passes the token it already exported.
        self.ray_auth_token = ray_auth_token or secrets.token_hex(32)
        self.tools = tools or Tools.locate()
        self.ray_cpus = ray_cpus
        # An MLflow tracking server only for the sessions whose tests use it (installed into
        # the tools cache on first use).
        self.mlflow = mlflow_server.ensure_installed(self.tools.versions) if mlflow else None
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "state.json"
        self._pids: dict[str, int] = {}
        self._log_paths: dict[str, str] = {}
        self._specs: dict[str, dict] = {}  # how each was started, so a fault test can restart it
        self.endpoints: Endpoints | None = None
        self.pki_ca: Path = self.dir / "pki" / "ca.crt"

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Endpoints:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, die_with_caller: bool = True) -> Endpoints:
        """Starts the bed. With ``die_with_caller`` (the default) a watchdog stops it when the
        calling process exits in any way, ``kill -9`` included."""
        stop_recorded(self.dir)  # a previous bed left in this directory is stopped first
        if self.dir.exists():
            node.cleanup(self.dir)  # never remove a directory through a leftover mount
            shutil.rmtree(self.dir)
        self.logs.mkdir(parents=True)
        if die_with_caller:  # before anything starts: a kill during start-up is covered too
            watchdog.start(self.dir, os.getpid())
        try:
            self._start_all()
        except BaseException:
            self.down()
            raise
        return self.endpoints  # type: ignore[return-value]

    def down(self) -> None:
        stop_recorded(self.dir)

    # ---------------------------------------------------------------- components
    def _start_all(self) -> None:
        node.check_images(self.tools.images_index, self.tools.images())  # fail before starting
        node.claim_machine(self.dir)
        node.setup_network()  # first: the API server, MinIO and FerretDB listen on its address
        pki = make_pki(self.dir / "pki", extra_ips=(node.HOST_IP,))
        ports = {name: free_port() for name in (
            "etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok", "kuberay-metrics",
            "kuberay-health", "minio", "minio-console", "ferretdb", "ray-gcs", "ray-dashboard",
            "ray-client", "ray-dashboard-agent", "ray-metrics-export", "kubelet", "kubelet-healthz",
            "kube-proxy-healthz", "kube-proxy-metrics", "coredns-ready",
            "kube-network-policies-metrics", "mlflow",
        )}
        host = node.HOST_IP
        apiserver = f"https://{host}:{ports['apiserver']}"
        kubeconfigs = {name: self._write_kubeconfig(name, apiserver, pki) for name in pki.clients}
        token = self.ray_auth_token
        self.endpoints = Endpoints(
            dir=str(self.dir),
            kubeconfig=str(kubeconfigs["admin"]),
            apiserver=apiserver,
            etcd=f"http://{LOOPBACK}:{ports['etcd']}",
            s3_endpoint=f"http://{host}:{ports['minio']}",
            s3_access_key=MINIO_USER,
            s3_secret_key=secrets.token_hex(16),
            mongodb_uri=f"mongodb://{host}:{ports['ferretdb']}/",
            ray_address=f"{LOOPBACK}:{ports['ray-gcs']}",
            ray_dashboard=f"http://{LOOPBACK}:{ports['ray-dashboard']}",
            ray_auth_token=token,
            kuberay_metrics=f"http://{LOOPBACK}:{ports['kuberay-metrics']}/metrics",
            kuberay_health=f"http://{LOOPBACK}:{ports['kuberay-health']}",
            kubernetes_version=self.tools.kubernetes_version,
        )
        # Independent of Kubernetes: start them first so they come up while the control plane does.
        self._start_minio(ports)
        self._start_ferretdb(ports)
        self._start_mlflow(ports)
        self._start_ray(ports)
        self._start_etcd(ports)
        self._start_apiserver(ports, pki)
        self._wait_apiserver(pki)
        self._start_controller_manager(ports, pki, kubeconfigs["controller-manager"])
        self._start_scheduler(ports, kubeconfigs["scheduler"])
        self._start_kwok(ports, kubeconfigs["kwok"])
        self._create_nodes()
        self._install_kuberay_crds()
        self._start_kuberay(ports)
        self._wait_ready()
        node.start(self, ports, kubeconfigs)
        self._write_state()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str | None] | None = None,
               cwd: Path | None = None) -> None:
        """Starts a component in its own process group; ``env`` values of None are unset."""
        log_path = self.logs / f"{name}.log"
        self._specs[name] = {"argv": argv, "env": env or {}, "cwd": str(cwd or self.dir)}
        self._pids[name] = _launch(log_path, argv, env or {}, cwd or self.dir)
        self._log_paths[name] = str(log_path)
        self._write_state()

    def _write_state(self) -> None:
        """Replaces state.json in one step: a watchdog reading it after the owner was killed
        mid-write still finds every pid recorded so far."""
        if self.endpoints is None:
            state = {"pids": self._pids, "logs": self._log_paths}
        else:
            self.endpoints.pids = dict(self._pids)
            self.endpoints.logs = dict(self._log_paths)
            state = asdict(self.endpoints)
        state["specs"] = self._specs
        _replace_file(self.state_file, json.dumps(state, indent=2))
        if self.endpoints is not None:
            lines = [f"export {k}={v}" for k, v in self.endpoints.env().items()]
            # kubectl and helm of the pinned versions come first on PATH for a shell using the bed.
            tool_dirs = [str(self.tools.kubectl.parent), str(self.tools.helm.parent)]
            lines.append(f"export PATH={':'.join(tool_dirs)}:$PATH")
            (self.dir / "bed.env").write_text("\n".join(lines) + "\n")

    def _write_kubeconfig(self, user: str, server: str, pki: Pki) -> Path:
        client = pki.clients[user]
        path = self.dir / ("kubeconfig" if user == "admin" else f"{user}.kubeconfig")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "modeleval-bed", "cluster": {
                "server": server, "certificate-authority": str(pki.ca_cert)}}],
            "users": [{"name": user, "user": {
                "client-certificate": str(client.cert), "client-key": str(client.key)}}],
            "contexts": [{"name": "modeleval-bed", "context": {
                "cluster": "modeleval-bed", "user": user, "namespace": "default"}}],
            "current-context": "modeleval-bed",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        return path

    def _start_etcd(self, ports: dict[str, int]) -> None:
        client, peer = f"http://{LOOPBACK}:{ports['etcd']}", f"http://{LOOPBACK}:{ports['etcd-peer']}"
        self._spawn("etcd", [
            str(self.tools.etcd), "--name=bed", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=bed={peer}", "--unsafe-no-fsync", "--quota-backend-bytes=4294967296",
        ])
        self._wait_http("etcd", f"{client}/health", timeout=60)

    def _start_apiserver(self, ports: dict[str, int], pki: Pki) -> None:
        kubelet_client = pki.clients["apiserver-kubelet-client"]
        self._spawn("kube-apiserver", [
            str(self.tools.kube("kube-apiserver")),
            f"--etcd-servers=http://{LOOPBACK}:{ports['etcd']}",
            # On the bridge: pods reach it through the `kubernetes` Service, whose endpoint the
            # API server keeps at its advertised address.
            f"--bind-address={node.HOST_IP}", f"--advertise-address={node.HOST_IP}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            # PodNodeSelector and PodTolerationRestriction: namespaces marked for the real node
            # send their pods there (node.NAMESPACE_ANNOTATIONS).
            "--enable-admission-plugins=ExtendedResourceToleration,PodNodeSelector,"
            "PodTolerationRestriction",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true", "--profiling=false",
        ])

    def _wait_apiserver(self, pki: Pki) -> None:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        admin = pki.clients["admin"]
        context.load_cert_chain(str(admin.cert), str(admin.key))
        assert self.endpoints is not None
        self._wait_http("kube-apiserver", f"{self.endpoints.apiserver}/readyz", timeout=120,
                        context=context)

    def _start_controller_manager(self, ports: dict[str, int], pki: Pki, kubeconfig: Path) -> None:
        self._spawn("kube-controller-manager", [
            str(self.tools.kube("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}", f"--secure-port={ports['kcm']}",
            "--leader-elect=false", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}", f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}", f"--cluster-signing-key-file={pki.ca_key}",
            "--controllers=*", "--concurrent-gc-syncs=5",
        ])
        self._wait_http("kube-controller-manager", f"https://{LOOPBACK}:{ports['kcm']}/healthz",
                        timeout=60, context=_insecure())

    def _start_scheduler(self, ports: dict[str, int], kubeconfig: Path) -> None:
        self._spawn("kube-scheduler", [
            str(self.tools.kube("kube-scheduler")),
            f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={LOOPBACK}", f"--secure-port={ports['scheduler']}", "--leader-elect=false",
        ])
        self._wait_http("kube-scheduler", f"https://{LOOPBACK}:{ports['scheduler']}/healthz",
                        timeout=60, context=_insecure())

    def _start_kwok(self, ports: dict[str, int], kubeconfig: Path) -> None:
        (self.dir / "kwok.yaml").write_text("")
        self._spawn("kwok", [
            str(self.tools.kwok), f"--kubeconfig={kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--server-address={LOOPBACK}:{ports['kwok']}",
            "--node-ip=10.244.0.1", "--cidr=10.244.0.0/16", "--node-lease-duration-seconds=40",
            f"--config={self.dir / 'kwok.yaml'}",  # never a user's ~/.kwok/kwok.yaml
        ])
        self._wait_http("kwok", f"http://{LOOPBACK}:{ports['kwok']}/healthz", timeout=60)

    def _create_nodes(self) -> None:
        nodes = [_node_manifest(f"cpu-node-{i}", cpu="8", memory="32Gi") for i in (1, 2)]
        nodes.append(_node_manifest("gpu-node-1", cpu="8", memory="64Gi", gpus=GPUS_PER_GPU_NODE))
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": nodes}))
        self.kubectl("wait", "--for=condition=Ready", "node", "-l", "type=kwok", "--timeout=90s")

    def _install_kuberay_crds(self) -> None:
        # The RayCluster CRD is too large for client-side apply's last-applied annotation.
        for crd in sorted(self.tools.kuberay_crds.glob("ray.io_*.yaml")):
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")

    def _start_kuberay(self, ports: dict[str, int]) -> None:
        assert self.endpoints is not None
        self._spawn("kuberay-operator", [
            str(self.tools.kuberay),
            f"--metrics-addr={LOOPBACK}:{ports['kuberay-metrics']}",
            f"--health-probe-bind-address={LOOPBACK}:{ports['kuberay-health']}",
            "--enable-leader-election=false",
        ], env={"KUBECONFIG": self.endpoints.kubeconfig})

    def _start_minio(self, ports: dict[str, int]) -> None:
        assert self.endpoints is not None
        self._spawn("minio", [
            str(self.tools.minio), "server", str(self.dir / "minio"),
            "--address", f"{node.HOST_IP}:{ports['minio']}",
            "--console-address", f"{LOOPBACK}:{ports['minio-console']}", "--quiet",
        ], env={"MINIO_ROOT_USER": self.endpoints.s3_access_key,
                "MINIO_ROOT_PASSWORD": self.endpoints.s3_secret_key,
                "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"})

    def _start_ferretdb(self, ports: dict[str, int]) -> None:
        data = self.dir / "ferretdb"
        data.mkdir()
        self._spawn("ferretdb", [
            str(self.tools.ferretdb), "--handler=sqlite", f"--sqlite-url=file:{data}/",
            f"--listen-addr={node.HOST_IP}:{ports['ferretdb']}",
        ])

    def _start_mlflow(self, ports: dict[str, int]) -> None:
        if self.mlflow is None:
            return
        ep = self.endpoints
        assert ep is not None
        ep.mlflow_uri = f"http://{node.HOST_IP}:{ports['mlflow']}"
        ep.mlflow_admin_password = secrets.token_hex(16)
        data = self.dir / "mlflow"
        data.mkdir()
        self._spawn("mlflow", mlflow_server.server_argv(self.mlflow, data, node.HOST_IP,
                                                        ports["mlflow"]),
                    env=mlflow_server.server_env(data, ep.s3_endpoint, ep.s3_access_key,
                                                 ep.s3_secret_key, ep.mlflow_admin_password,
                                                 secrets.token_hex(16)), cwd=data)

    def _start_ray(self, ports: dict[str, int]) -> None:
        assert self.endpoints is not None
        ray = Path(sys.executable).with_name("ray")
        # Started from the project directory: a head started in a temp folder makes `import ray`
        # inside jobs resolve to Ray's own session folder there.
        self._spawn("ray-head", [
            str(ray), "start", "--head", "--block", f"--node-ip-address={LOOPBACK}",
            f"--port={ports['ray-gcs']}", f"--num-cpus={self.ray_cpus}",
            # One simulated GPU, like kwok's GPU node: GPU evaluations schedule; kernels use CPU.
            "--num-gpus=1",
            "--include-dashboard=true", f"--dashboard-host={LOOPBACK}",
            f"--dashboard-port={ports['ray-dashboard']}",
            f"--ray-client-server-port={ports['ray-client']}",
            f"--dashboard-agent-listen-port={ports['ray-dashboard-agent']}",
            f"--metrics-export-port={ports['ray-metrics-export']}",
            f"--temp-dir={self.dir / 'ray'}", "--disable-usage-stats",
        # Like a RayCluster's pods, the head gets the object store and results store settings
        # through its environment, so its workers read S3 the way the driver does.
        # Job entry points run `python`: the project venv's, as a Ray image's own python would be.
        # The runner's wait for a MongoDB that does not answer is 4 s per try here, not 10: the
        # bed's FerretDB is local, and the fault test that stops it waits out every try.
        ], env={**self.endpoints.env(), "RAY_ADDRESS": None, "MODELEVAL_MONGODB_TIMEOUT_MS": "4000",
                "PATH": f"{ray.parent}{os.pathsep}{os.environ.get('PATH', '')}"}, cwd=REPO_ROOT)

    def _wait_ready(self) -> None:
        assert self.endpoints is not None
        ep = self.endpoints
        self._wait_http("minio", f"{ep.s3_endpoint}/minio/health/ready", timeout=60)
        self._wait_tcp("ferretdb", ep.mongodb_uri.split("//")[1].rstrip("/"), timeout=60)
        self._wait_http("kuberay-operator", f"{ep.kuberay_health}/readyz", timeout=90)
        self._wait_http("ray-head", f"{ep.ray_dashboard}/api/version", timeout=120,
                        headers={"Authorization": f"Bearer {ep.ray_auth_token}"})
        if ep.mlflow_uri:
            mlflow_server.create_artifacts_bucket(ep.s3_endpoint, ep.s3_access_key,
                                                  ep.s3_secret_key)
            self._wait_http("mlflow", f"{ep.mlflow_uri}/health", timeout=180)

    # ---------------------------------------------------------------- helpers
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        assert self.endpoints is not None
        result = subprocess.run(
            [str(self.tools.kubectl), f"--kubeconfig={self.endpoints.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=180,
        )
        if check and result.returncode != 0:
            raise BedError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _alive(self, name: str) -> bool:
        pid = self._pids.get(name)
        if pid is None:
            return False
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return _pid_alive(pid)
        return finished == 0

    def _fail(self, name: str, why: str) -> BedError:
        log = Path(self._log_paths.get(name, self.logs / f"{name}.log"))
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
        return BedError(f"{name} {why}; log: {log}\n--- last lines ---\n{tail}")

    def _wait(self, name: str, probe: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(name):
                raise self._fail(name, "exited during start-up")
            if probe():
                return
            time.sleep(0.25)
        raise self._fail(name, f"was not ready after {timeout:.0f}s")

    def _wait_http(self, name: str, url: str, timeout: float, context: ssl.SSLContext | None = None,
                   headers: dict[str, str] | None = None) -> None:
        def probe() -> bool:
            try:
                request = urllib.request.Request(url, headers=headers or {})
                with urllib.request.urlopen(request, timeout=2, context=context) as response:
                    return response.status == 200
            except (urllib.error.URLError, OSError):
                return False

        self._wait(name, probe, timeout)

    def _wait_tcp(self, name: str, hostport: str, timeout: float) -> None:
        host, port = hostport.rsplit(":", 1)

        def probe() -> bool:
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    return True
            except OSError:
                return False

        self._wait(name, probe, timeout)


def _launch(log_path: Path, argv: list[str], env: dict[str, str | None], cwd: Path | str) -> int:
    merged = {**os.environ, **env}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(cwd),
            env={k: v for k, v in merged.items() if v is not None}, start_new_session=True,
        )
    return process.pid


# ------------------------------------------------------------------------- fault injection
def kill_component(directory: Path | str, name: str, timeout: float = 30.0) -> None:
    """Crashes one component (SIGKILL to its process group) and waits until it is gone. Its data
    directory stays, as a crashed server's disk would."""
    state = json.loads((Path(directory) / "state.json").read_text())
    pid = state["pids"][name]
    _signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    deadline = time.monotonic() + timeout
    while _group_alive(pid):
        if time.monotonic() > deadline:
            raise BedError(f"{name} (pid {pid}) still running {timeout:.0f}s after SIGKILL")
        time.sleep(0.1)


def start_component(directory: Path | str, name: str) -> int:
    """Starts a component again with the command line, ports and data it first had; records the
    new pid so that ``down`` stops it. Returns the pid (the caller waits for readiness)."""
    directory = Path(directory)
    state_file = directory / "state.json"
    state = json.loads(state_file.read_text())
    spec = state["specs"][name]
    pid = _launch(directory / "logs" / f"{name}.log", spec["argv"], spec["env"], spec["cwd"])
    state["pids"][name] = pid
    _replace_file(state_file, json.dumps(state, indent=2))
    return pid


def _replace_file(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _insecure() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _node_manifest(name: str, cpu: str, memory: str, gpus: int = 0) -> dict:
    capacity = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "type": "kwok", "modeleval.dev/pool": "cpu"}
    taints = []
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
        labels.update({"modeleval.dev/pool": "gpu", "nvidia.com/gpu.present": "true"})
        # As on real GPU nodes; ExtendedResourceToleration lets GPU-requesting pods tolerate it.
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {
            FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def stop_recorded(directory: Path, grace: float = 10.0) -> list[str]:
    """Stops every process group recorded in ``directory/state.json`` and the bed's watchdog;
    returns the names stopped."""
    watchdog.stop(directory)  # first: stopping on purpose must not race the watchdog's own stop
    state_file = directory / "state.json"
    if not state_file.exists():
        return []
    pids: dict[str, int] = json.loads(state_file.read_text()).get("pids", {})
    # Reverse start order: clients of the API server go before it, etcd last.
    order = list(reversed(list(pids.items())))
    for _, pid in order:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_group_alive(pid) for _, pid in order):
        time.sleep(0.2)
    for _, pid in order:
        _signal_group(pid, signal.SIGKILL)
    for _, pid in order:
        with contextlib.suppress(ChildProcessError):  # reap our own children; others are not ours
            os.waitpid(pid, os.WNOHANG)
    node.cleanup(directory)  # container processes, shims, mounts, iptables rules, the bridge
    state_file.unlink()
    return [name for name, _ in order]


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pid, sig)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
