"""The local test bed: Kubernetes (etcd, API server, controller-manager, scheduler, kwok), the
KubeRay operator, MinIO, FerretDB and a Ray head, as local processes on 127.0.0.1."""

from .bed import (RAY_LOOPBACK_ENV, BedError, Endpoints, TestBed, kill_component, start_component,
                  stop_recorded)
from .tools import ToolMissing, Tools

__all__ = ["RAY_LOOPBACK_ENV", "BedError", "Endpoints", "TestBed", "ToolMissing", "Tools",
           "kill_component", "start_component", "stop_recorded"]
