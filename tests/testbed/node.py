"""The test bed's one real node: containerd + runc + CNI, a kubelet and kube-proxy of the bed's
Kubernetes version, and CoreDNS for cluster DNS, all as host processes.

Pods on it run real containers from the images `make images` built (no registry is reachable,
so the images are imported into containerd). The node is tainted so that only namespaces marked
for it (`real_node_namespace`) place pods there; the kwok nodes keep everything else.

Its network is a host-only bridge (``BRIDGE``, ``HOST_IP``): pods reach the API server, MinIO and
FerretDB at the bridge's address, and kube-proxy routes Services. One real node per machine: the
bridge, kube-proxy's iptables chains and the kubelet's cgroups are machine-wide.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bed import TestBed

NODE_NAME = "real-node-1"
BRIDGE = "mebr0"
HOST_IP = "10.77.0.1"
POD_CIDR = "10.77.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
NODE_LABEL = ("modeleval.dev/node", "real")
TAINT_KEY = "modeleval.dev/real-node"
# PodNodeSelector and PodTolerationRestriction read these namespace annotations and add the
# node selector and toleration to every pod created there, so unchanged manifests (the chart's,
# KubeRay's) land on the real node.
NAMESPACE_ANNOTATIONS = {
    "scheduler.alpha.kubernetes.io/node-selector": f"{NODE_LABEL[0]}={NODE_LABEL[1]}",
    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps(
        [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]),
}
# A stand-in for the cloud metadata service: its address in a network namespace of its own behind
# a veth pair, with an HTTP listener, so a pod's connection to it is forwarded (and judged by the
# policy enforcer) like one leaving the node, and "refused by policy" differs from "nothing there".
METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80
METADATA_NETNS = "modeleval-metadata"
METADATA_VETH = ("memeta0", "memeta1")  # host side, namespace side
METADATA_LINK = ("10.78.0.1", "10.78.0.2")
# The NetworkPolicy enforcer's nftables table and its identity in the bed.
POLICY_TABLE = ("inet", "kube-network-policies")
POLICY_ACCOUNT = "kube-network-policies"
SERVICE_ACCOUNT_DIR = Path("/run/secrets/kubernetes.io/serviceaccount")
SANDBOX_IMAGE = "modeleval.local/pause:1.0"
LOCK_FILE = Path("/run/modeleval-real-node.json")
RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"


class NodeError(RuntimeError):
    """The real node could not be set up; the message names the step."""


def run(step: str, argv: list[str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as error:
        raise NodeError(f"real node, {step}: {argv[0]} is not installed (run `make tools`)") from error
    if check and result.returncode != 0:
        raise NodeError(f"real node, {step}: `{' '.join(argv)}` failed: {result.stderr.strip()[-2000:]}")
    return result


# ----------------------------------------------------------------------------- network
def check_images(images_index: Path, images: list[dict]) -> None:
    """Before anything starts: the images the real node runs must have been built."""
    missing = [i["archive"] for i in images if not Path(i["archive"]).exists()]
    if not images or missing:
        raise NodeError(f"real node: no images in {images_index}"
                        + (f" (missing: {', '.join(missing)})" if missing else "")
                        + "; run `make images`")


def _machine_owner() -> Path | None:
    """The directory of the live bed that holds the machine's real node, if any."""
    with contextlib.suppress(ValueError, OSError, KeyError):
        owner = Path(json.loads(LOCK_FILE.read_text())["dir"])
        if (owner / "state.json").exists() and _bed_alive(owner):
            return owner
    return None


def claim_machine(bed_dir: Path) -> None:
    """Records this bed as the machine's real node; refuses when another live bed holds it and
    cleans up after one that died without `down`."""
    if LOCK_FILE.exists():
        owner = _machine_owner()
        if owner is not None and owner != bed_dir:
            raise NodeError(f"real node: the test bed in {owner} runs the machine's real node; "
                            f"stop it first (make cluster-down BED_DIR={owner})")
        with contextlib.suppress(ValueError, OSError, KeyError):
            stale = Path(json.loads(LOCK_FILE.read_text())["dir"])
            if stale != bed_dir:
                cleanup(stale)
    if os.geteuid() != 0:
        raise NodeError("real node: needs root (containerd, the kubelet, a bridge and iptables)")
    LOCK_FILE.write_text(json.dumps({"dir": str(bed_dir)}))


def _bed_alive(directory: Path) -> bool:
    pids = json.loads((directory / "state.json").read_text()).get("pids", {})
    return any(Path(f"/proc/{pid}").exists() for pid in pids.values())


def setup_network() -> None:
    """The pods' bridge with the host's address on it, up before anything binds to that address."""
    if run("bridge", ["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        run("bridge", ["ip", "link", "add", BRIDGE, "type", "bridge"])
    addresses = run("bridge", ["ip", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f" {HOST_IP}/" not in addresses:
        run("bridge", ["ip", "addr", "add", f"{HOST_IP}/16", "dev", BRIDGE])
    run("bridge", ["ip", "link", "set", BRIDGE, "up"])
    for key, value in (("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")):
        path = Path("/proc/sys") / key
        if not path.exists():
            raise NodeError(f"real node, network: {path} is missing (kernel module br_netfilter?)")
        if path.read_text().strip() != value:
            path.write_text(value)
    setup_metadata_stand_in()


def setup_metadata_stand_in() -> None:
    """The metadata address in its own network namespace, routed from the host through a veth
    pair (a listener is started with the bed)."""
    host, inside = METADATA_VETH
    host_ip, inside_ip = METADATA_LINK
    if METADATA_NETNS not in run("metadata", ["ip", "netns", "list"]).stdout.split():
        run("metadata", ["ip", "netns", "add", METADATA_NETNS])
    if run("metadata", ["ip", "link", "show", host], check=False).returncode != 0:
        run("metadata", ["ip", "link", "add", host, "type", "veth", "peer", "name", inside,
                         "netns", METADATA_NETNS])
    run("metadata", ["ip", "addr", "replace", f"{host_ip}/30", "dev", host])
    run("metadata", ["ip", "link", "set", host, "up"])
    inside_ns = ["ip", "-n", METADATA_NETNS]
    run("metadata", [*inside_ns, "addr", "replace", f"{inside_ip}/30", "dev", inside])
    run("metadata", [*inside_ns, "addr", "replace", f"{METADATA_ADDRESS}/32", "dev", "lo"])
    run("metadata", [*inside_ns, "link", "set", inside, "up"])
    run("metadata", [*inside_ns, "link", "set", "lo", "up"])
    run("metadata", [*inside_ns, "route", "replace", "default", "via", host_ip])
    run("metadata", ["ip", "route", "replace", f"{METADATA_ADDRESS}/32", "via", inside_ip])


# ----------------------------------------------------------------------------- configuration
def cni_config(directory: Path) -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": "modeleval-bed",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(directory / "cni" / "ipam"),
                      "ranges": [[{"subnet": POD_CIDR, "gateway": HOST_IP,
                                   "rangeStart": "10.77.1.1", "rangeEnd": "10.77.255.254"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def containerd_config(directory: Path, runc_wrapper: Path, root: Path) -> str:
    state = directory / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}"
state = "{state / 'state'}"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket_path(directory)}"

[ttrpc]
  address = "{state / 'ttrpc.sock'}"

[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{runc_wrapper}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{directory / 'cni' / 'net.d'}"
"""


def socket_path(directory: Path) -> Path:
    return directory / "containerd" / "containerd.sock"


def kubelet_config(directory: Path, ca_cert: Path, port: int, healthz_port: int) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # these VMs mount cgroup v1 hierarchies
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{socket_path(directory)}",
        "address": HOST_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca_cert)}},
        "authorization": {"mode": "AlwaysAllow"},  # only clients with the bed CA's certificates
        "clusterDNS": [HOST_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "/etc/resolv.conf",
        "failSwapOn": False,
        "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
        # The images cannot be pulled again (no registry): never collect them, and leave the
        # disk thresholds to the machine.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "podLogsDir": str(directory / "pod-logs"),
        "serializeImagePulls": False,
        "maxPods": 40,
        "nodeStatusReportFrequency": "20s",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # 0: leave the machine's conntrack sysctls as they are (the VM may refuse to change them).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        # The kwok nodes' tests create and delete hundreds of head Services; a real node's pods
        # wait a few seconds for a new Service rather than the machine rewriting rules each second.
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "5s", "syncPeriod": "60s"},
    }


def corefile(kubeconfig: Path, ready_port: int) -> str:
    return f""".:53 {{
    bind {HOST_IP}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} modeleval-bed
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 5
}}
"""


# ----------------------------------------------------------------------------- start
def start(bed: "TestBed", ports: dict[str, int], kubeconfigs: dict[str, Path]) -> None:
    """CoreDNS, containerd (with the images imported), the kubelet and kube-proxy; returns when
    the node is Ready."""
    tools, directory = bed.tools, bed.dir
    for sub in ("cni/net.d", "cni/ipam", "containerd", "kubelet", "pod-logs"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / "cni" / "net.d" / "10-modeleval-bed.conflist").write_text(
        json.dumps(cni_config(directory), indent=2))

    (directory / "Corefile").write_text(corefile(kubeconfigs["admin"], ports["coredns-ready"]))
    bed._spawn("coredns", [str(tools.coredns), "-conf", str(directory / "Corefile")])

    root = tools.containerd_root
    root.mkdir(parents=True, exist_ok=True)
    config = directory / "containerd" / "config.toml"
    config.write_text(containerd_config(directory, tools.runc_wrapper, root))
    bed._spawn("containerd", ["containerd", "--config", str(config)],
               env={"MODELEVAL_RUNC": RUNC})
    bed._wait("containerd", lambda: socket_path(directory).exists() and ctr_ok(directory), timeout=60)
    forget_containers(directory)
    import_images(bed)

    kubelet_yaml = directory / "kubelet" / "config.json"
    kubelet_yaml.write_text(json.dumps(kubelet_config(directory, bed.pki_ca, ports["kubelet"],
                                                      ports["kubelet-healthz"]), indent=2))
    bed._spawn("kubelet", [
        str(tools.kube_node("kubelet")), f"--config={kubelet_yaml}",
        f"--kubeconfig={kubeconfigs['real-node']}", f"--root-dir={directory / 'kubelet'}",
        f"--cert-dir={directory / 'kubelet' / 'pki'}", f"--hostname-override={NODE_NAME}",
        f"--node-ip={HOST_IP}", f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]},type=real",
        "--v=1",
    ])
    proxy_yaml = directory / "kube-proxy.json"
    proxy_yaml.write_text(json.dumps(kube_proxy_config(
        kubeconfigs["kube-proxy"], ports["kube-proxy-healthz"], ports["kube-proxy-metrics"]), indent=2))
    bed._spawn("kube-proxy", [str(tools.kube_node("kube-proxy")), f"--config={proxy_yaml}", "--v=1"])
    start_metadata_listener(bed)
    start_policy_enforcer(bed, ports)

    bed._wait_http("coredns", f"http://127.0.0.1:{ports['coredns-ready']}/ready", timeout=90)
    bed._wait_http("kube-proxy", f"http://127.0.0.1:{ports['kube-proxy-healthz']}/healthz", timeout=90)
    bed._wait("kubelet", lambda: _node_ready(bed), timeout=180)
    bed._wait_http("kube-network-policies",
                   f"http://127.0.0.1:{ports['kube-network-policies-metrics']}/metrics", timeout=90)
    bed._wait_tcp("metadata-listener", f"{METADATA_ADDRESS}:{METADATA_PORT}", timeout=60)


def start_metadata_listener(bed: "TestBed") -> None:
    root = bed.dir / "metadata"
    root.mkdir(exist_ok=True)
    (root / "latest").write_text("the test bed's stand-in for the cloud metadata service\n")
    bed._spawn("metadata-listener", ["ip", "netns", "exec", METADATA_NETNS, sys.executable, "-m",
                                     "http.server", "--bind", METADATA_ADDRESS, str(METADATA_PORT)],
               cwd=root)


# What kube-network-policies reads (its informers), and its Events.
POLICY_ENFORCER_RBAC = [
    {"apiVersion": "v1", "kind": "ServiceAccount",
     "metadata": {"name": POLICY_ACCOUNT, "namespace": "kube-system"}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": POLICY_ACCOUNT},
     "rules": [{"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"],
                "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
                "verbs": ["create", "patch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": POLICY_ACCOUNT},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": POLICY_ACCOUNT},
     "subjects": [{"kind": "ServiceAccount", "name": POLICY_ACCOUNT, "namespace": "kube-system"}]},
]


def start_policy_enforcer(bed: "TestBed", ports: dict[str, int]) -> None:
    """kube-network-policies as a host process. It reads only the in-cluster configuration, so
    it runs in a mount namespace of its own where the service account directory holds a token
    of its account and the bed's CA (the host's directory stays empty)."""
    bed.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": POLICY_ENFORCER_RBAC}))
    account = bed.dir / "kube-network-policies"
    account.mkdir(exist_ok=True)
    token = bed.kubectl("create", "token", POLICY_ACCOUNT, "-n", "kube-system", "--duration=48h")
    (account / "token").write_text(token.strip())
    shutil.copyfile(bed.pki_ca, account / "ca.crt")
    (account / "namespace").write_text("kube-system")
    SERVICE_ACCOUNT_DIR.mkdir(parents=True, exist_ok=True)
    assert bed.endpoints is not None
    host, port = bed.endpoints.apiserver.removeprefix("https://").rsplit(":", 1)
    enforcer = [str(bed.tools.kube_network_policies), f"--hostname-override={NODE_NAME}",
                f"--metrics-bind-address=127.0.0.1:{ports['kube-network-policies-metrics']}",
                "--disable-nri",  # pod addresses from the API: the bed's containerd has no NRI
                "--netfilter-bug-1766-fix=false", "--v=2"]
    script = 'mount --bind "$0" "$1" && shift && exec "$@"'
    bed._spawn("kube-network-policies",
               ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(account),
                str(SERVICE_ACCOUNT_DIR), *enforcer],
               env={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})
    if not nft_queue_supported():
        queue_new_pod_connections()


# The enforcer's nfqueue number (its default) and the chain that feeds it where nftables cannot.
POLICY_QUEUE = 100
QUEUE_CHAIN = "MODELEVAL-POLICY-QUEUE"
NFT_QUEUE_PROBE = ("add table inet probe; add chain inet probe c { type filter hook postrouting "
                   "priority 0; }; add rule inet probe c queue num 100 bypass")


def nft_queue_supported() -> bool:
    """Whether the kernel has nftables' queue expression (CONFIG_NFT_QUEUE), tried in a network
    namespace of its own. Some VM kernels have only the iptables NFQUEUE target."""
    probe = subprocess.run(["unshare", "--net", "nft", NFT_QUEUE_PROBE], capture_output=True)
    return probe.returncode == 0


def queue_new_pod_connections() -> None:
    """What the enforcer's own nftables rules do, with the iptables NFQUEUE target: the first
    packet of each connection to or from a pod goes to the enforcer, which accepts or drops it;
    the node's own root processes (the kubelet's probes) are not judged, as in its rules."""
    run("policy queue", ["iptables", "-t", "mangle", "-N", QUEUE_CHAIN], check=False)
    run("policy queue", ["iptables", "-t", "mangle", "-F", QUEUE_CHAIN])
    for rule in (["-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
                 ["-m", "conntrack", "!", "--ctstate", "NEW", "-j", "RETURN"],
                 ["-s", POD_CIDR, "-j", "NFQUEUE", "--queue-num", str(POLICY_QUEUE)],
                 ["-d", POD_CIDR, "-j", "NFQUEUE", "--queue-num", str(POLICY_QUEUE)]):
        run("policy queue", ["iptables", "-t", "mangle", "-A", QUEUE_CHAIN, *rule])
    jump = ["POSTROUTING", "-j", QUEUE_CHAIN]
    if run("policy queue", ["iptables", "-t", "mangle", "-C", *jump], check=False).returncode != 0:
        run("policy queue", ["iptables", "-t", "mangle", "-A", *jump])


def _remove_queue_chain() -> None:
    for _ in range(10):
        if subprocess.run(["iptables", "-t", "mangle", "-D", "POSTROUTING", "-j", QUEUE_CHAIN],
                          capture_output=True).returncode != 0:
            break
    subprocess.run(["iptables", "-t", "mangle", "-F", QUEUE_CHAIN], capture_output=True)
    subprocess.run(["iptables", "-t", "mangle", "-X", QUEUE_CHAIN], capture_output=True)


def ctr(directory: Path, *args: str) -> list[str]:
    return ["ctr", "--address", str(socket_path(directory)), "--namespace", "k8s.io", *args]


def ctr_ok(directory: Path) -> bool:
    return subprocess.run(ctr(directory, "version"), capture_output=True).returncode == 0


def forget_containers(directory: Path) -> None:
    """containerd's store outlives a bed (the images stay imported); the containers of an
    earlier bed's pods are removed before this bed's kubelet starts."""
    for container in run("containers", ctr(directory, "containers", "ls", "-q")).stdout.split():
        subprocess.run(ctr(directory, "tasks", "kill", "-s", "SIGKILL", container), capture_output=True)
        subprocess.run(ctr(directory, "tasks", "delete", "-f", container), capture_output=True)
        subprocess.run(ctr(directory, "containers", "delete", container), capture_output=True)


def import_images(bed: "TestBed") -> None:
    """Loads each image `make images` built into containerd, unless the same build is there."""
    images = bed.tools.images()
    check_images(bed.tools.images_index, images)
    marker = bed.tools.containerd_root / "modeleval-imported.json"
    imported: dict[str, str] = json.loads(marker.read_text()) if marker.exists() else {}
    present = run("images", ctr(bed.dir, "images", "ls", "-q")).stdout.split()
    log = bed.logs / "images.log"
    for image in images:
        if imported.get(image["ref"]) == image["key"] and image["ref"] in present:
            continue
        started = time.monotonic()
        with open(log, "a") as out:
            result = subprocess.run(ctr(bed.dir, "images", "import", "--snapshotter", "overlayfs",
                                        image["archive"]), stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise NodeError(f"real node: importing {image['ref']} from {image['archive']} failed; "
                            f"log: {log}")
        imported[image["ref"]] = image["key"]
        marker.write_text(json.dumps(imported, indent=2))
        with open(log, "a") as out:
            out.write(f"imported {image['ref']} in {time.monotonic() - started:.1f}s\n")


def _node_ready(bed: "TestBed") -> bool:
    out = bed.kubectl("get", "node", NODE_NAME, "-o",
                      "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False)
    return out.strip() == "True"


# ----------------------------------------------------------------------------- stop
def cleanup(directory: Path) -> None:
    """After the bed's process groups are stopped: every container process, containerd's shims,
    the mounts under the bed directory, kube-proxy's iptables rules and the bridge. Safe to call
    twice and for a bed that never had a real node."""
    directory = directory.resolve()
    _kill_shims(directory)
    owner = _machine_owner()
    if owner is not None and owner != directory:
        _unmount_under(directory)  # another live bed holds the machine-wide parts: leave them
        return
    _kill_pod_processes()
    _unmount_under(directory)
    proxy = _kube_proxy_binary(directory)
    if proxy:
        subprocess.run([proxy, "--cleanup"], capture_output=True, timeout=60)
    _remove_kubelet_chains()
    # The enforcer's rules queue pod packets to a listener that is gone: remove them.
    subprocess.run(["nft", "delete", "table", *POLICY_TABLE], capture_output=True)
    _remove_queue_chain()
    subprocess.run(["ip", "netns", "del", METADATA_NETNS], capture_output=True)  # and its veth
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    with contextlib.suppress(OSError, ValueError, KeyError):
        if Path(json.loads(LOCK_FILE.read_text())["dir"]) == directory:
            LOCK_FILE.unlink()


def _kill_pod_processes() -> None:
    """SIGKILL to every process in the kubelet's pod cgroups (containers and pause processes)."""
    base = Path("/sys/fs/cgroup/pids/kubepods")
    if not base.exists():
        return
    for _ in range(20):
        pids = {int(p) for procs in base.rglob("cgroup.procs") for p in _read(procs).split()}
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.25)


def _kill_shims(directory: Path) -> None:
    mark = str(socket_path(directory))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmdline = _read(entry / "cmdline").replace("\0", " ")
            if "containerd-shim" in cmdline and mark in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


def _unmount_under(directory: Path) -> None:
    """Container root filesystems, pod volumes and network namespaces mounted in the bed's
    directory, deepest first, so removing the directory never reaches through a mount."""
    for _ in range(3):
        points = []
        for line in _read(Path("/proc/self/mountinfo")).splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(directory) or point.startswith(f"{directory}/"):
                points.append(point)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)


# The kubelet's own iptables chains (kube-proxy --cleanup removes kube-proxy's).
KUBELET_CHAINS = {"filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
                  "nat": ("KUBE-KUBELET-CANARY",), "mangle": ("KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")}


def _remove_kubelet_chains() -> None:
    for hook in ("INPUT", "OUTPUT"):
        for _ in range(10):  # a jump added more than once (a kubelet restarted) is removed each time
            deleted = subprocess.run(["iptables", "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL"],
                                     capture_output=True)
            if deleted.returncode != 0:
                break
    for table, chains in KUBELET_CHAINS.items():
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)


def _kube_proxy_binary(directory: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        argv = json.loads((directory / "state.json").read_text())["specs"]["kube-proxy"]["argv"]
        return argv[0]
    return shutil.which("kube-proxy")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
