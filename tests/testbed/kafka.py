"""A real Apache Kafka broker for the event sinks' tests: one KRaft node (broker and controller
in one process) on loopback, with a PLAINTEXT listener and a SASL_SSL one (PLAIN and
SCRAM-SHA-512 users, a certificate from a CA of its own), from the jars `make tools kafka`
resolved from Maven Central, on Debian's JRE 17. Started without waiting (:meth:`KafkaBroker.start`) so it comes up while the
bed does; it dies with the process that started it (PR_SET_PDEATHSIG), ``kill -9`` included."""

from __future__ import annotations

import base64
import ctypes
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from .bed import LOOPBACK, BedError, free_port
from .certs import make_serving
from .tools import read_versions, tools_dir

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def kafka_libs() -> Path:
    """The broker's jars; a clear error when `make tools kafka` has not run."""
    libs = tools_dir() / f"kafka-{read_versions()['KAFKA_VERSION']}" / "libs"
    if not libs.is_dir() or shutil.which("java") is None:
        raise BedError(f"Kafka is not prepared ({libs} or java missing): run "
                       "`hack/build-tools.sh kafka`")
    return libs


# The SASL_SSL listener's users: PLAIN's are in the broker's JAAS line, SCRAM's are written into
# the log directory when it is formatted (KRaft keeps SCRAM credentials in its metadata).
PLAIN_USER, SCRAM_USER = "tenant-plain", "tenant-scram"
SCRAM = "SCRAM-SHA-512"


def server_properties(directory: Path, port: int, controller_port: int, sasl_port: int,
                      plain_password: str, keystore: Path) -> str:
    """One KRaft node with a PLAINTEXT listener and a SASL_SSL one (PLAIN and SCRAM-SHA-512
    over TLS with a PEM keystore), advertised as localhost so the certificate's name holds."""
    return "\n".join([
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.voters=1@{LOOPBACK}:{controller_port}",
        f"listeners=PLAINTEXT://{LOOPBACK}:{port},SASL_SSL://{LOOPBACK}:{sasl_port},"
        f"CONTROLLER://{LOOPBACK}:{controller_port}",
        f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{port},SASL_SSL://localhost:{sasl_port}",
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_SSL:SASL_SSL",
        f"sasl.enabled.mechanisms=PLAIN,{SCRAM}",
        "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain."
        f'PlainLoginModule required user_{PLAIN_USER}="{plain_password}";',
        f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config=org.apache.kafka.common."
        "security.scram.ScramLoginModule required;",
        "listener.name.sasl_ssl.ssl.keystore.type=PEM",
        f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
        f"log.dirs={directory / 'data'}", "num.partitions=1",
        # One node: every internal topic has one replica (acks=all means that one).
        "offsets.topic.replication.factor=1", "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1", "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true", ""])


class KafkaBroker:
    __test__ = False

    def __init__(self, directory: Path):
        self.dir = directory
        self.port, self.controller_port, self.sasl_port = free_port(), free_port(), free_port()
        self.bootstrap = f"{LOOPBACK}:{self.port}"
        # SASL_SSL: its address (the certificate's name), CA and users (mechanism -> (user,
        # password)).
        self.sasl_bootstrap = f"localhost:{self.sasl_port}"
        self.ca_cert = directory / "tls" / "ca.crt"
        self.users = {"PLAIN": (PLAIN_USER, secrets.token_hex(12)),
                      SCRAM: (SCRAM_USER, secrets.token_hex(12))}
        self.log = directory / "kafka.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "KafkaBroker":
        """Formats the log directory and starts the broker; returns at once."""
        libs = kafka_libs()
        self.dir.mkdir(parents=True, exist_ok=True)
        ca, cert, key = make_serving(self.dir / "tls", "kafka", f"DNS:localhost,IP:{LOOPBACK}")
        keystore = self.dir / "tls" / "broker.pem"
        keystore.write_text(key.read_text() + cert.read_text())
        config = self.dir / "server.properties"
        config.write_text(server_properties(self.dir, self.port, self.controller_port,
                                            self.sasl_port, self.users["PLAIN"][1], keystore))
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        scram = "{}=[name={},password={}]".format(SCRAM, *self.users[SCRAM])
        java = ["java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-cp", f"{libs}/*"]
        command = " ".join(map(shlex.quote, java))  # the class path's * is Java's, not the shell's
        script = (f"{command} kafka.tools.StorageTool format -t {cluster} -c {shlex.quote(str(config))}"
                  f" --add-scram {shlex.quote(scram)}"
                  f" && exec {command} kafka.Kafka {shlex.quote(str(config))}")
        self.process = subprocess.Popen(["sh", "-c", script], stdout=open(self.log, "ab"),
                                        stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, timeout: float = 90.0) -> "KafkaBroker":
        """Until the broker answers a metadata request (it is then the quorum's leader)."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BedError(f"Kafka exited; see {self.log}")
            if _listening(self.port):
                try:
                    if AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(
                            timeout=2).brokers:
                        return self
                except Exception:  # not the leader yet
                    pass
            time.sleep(0.3)
        raise BedError(f"Kafka not ready after {timeout:.0f}s; see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0
