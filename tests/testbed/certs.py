"""A throw-away PKI for the local control plane, made with the openssl command line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    clients: dict[str, ClientCert]


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _signed(directory: Path, name: str, subject: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, crt, extfile = (directory / f"{name}{s}" for s in (".key", ".csr", ".crt", ".ext"))
    extfile.write_text(ext)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-subj", subject,
             "-out", str(csr), cwd=directory)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "30", "-sha256", "-extfile", str(extfile), "-out", str(crt),
             cwd=directory)
    return crt, key


# Identities the control plane components use; RBAC's bootstrap policy knows these names.
CLIENTS = {
    "admin": "/O=system:masters/CN=kubernetes-admin",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
    "kwok": "/O=system:masters/CN=kwok-controller",
    "apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
    # The real node: the Node authorizer knows system:node:<name>, RBAC knows system:kube-proxy.
    "real-node": "/O=system:nodes/CN=system:node:real-node-1",
    "kube-proxy": "/CN=system:kube-proxy",
}


def _make_ca(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-days", "30",
             "-subj", "/CN=modeleval-testbed-ca", "-out", str(ca_cert), cwd=directory)
    return ca_cert, ca_key


def make_serving(directory: Path, name: str, alt_names: str) -> tuple[Path, Path, Path]:
    """A CA of its own and a server certificate it signed for ``alt_names`` (a
    subjectAltName value): the CA's certificate, the server's certificate and its key."""
    ca = _make_ca(directory)
    cert, key = _signed(directory, name, f"/CN={name}", ca,
                        f"subjectAltName={alt_names}\nextendedKeyUsage=serverAuth\n")
    return ca[0], cert, key


def make_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    ca = _make_ca(directory)
    ca_cert, ca_key = ca
    serving_cert, serving_key = _signed(
        directory, "apiserver", "/CN=kube-apiserver", ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1"
        + "".join(f",IP:{ip}" for ip in extra_ips) + "\n"
        "extendedKeyUsage=serverAuth\n",
    )
    clients = {
        name: ClientCert(*_signed(directory, name, subject, ca, "extendedKeyUsage=clientAuth\n"))
        for name, subject in CLIENTS.items()
    }
    sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
    _openssl("genrsa", "-out", str(sa_key), "2048", cwd=directory)
    _openssl("rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub), cwd=directory)
    return Pki(directory, ca_cert, ca_key, serving_cert, serving_key, sa_key, sa_pub, clients)
