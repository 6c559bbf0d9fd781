"""The operator's settings: one typed object, read from the environment (prefix MODELEVAL_)."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..api.events import EventSink


# The cloud instance metadata service (AWS, GCP, Azure; AWS's IPv6 address): whoever reaches it
# gets the node's cloud identity.
METADATA_NETWORKS = ("169.254.169.254/32", "fd00:ec2::254/128")


class EgressEndpoint(BaseModel):
    """A network a Ray pod may connect to (a CIDR), on the listed ports or on any."""

    model_config = ConfigDict(extra="forbid")

    cidr: str
    ports: list[int] = Field(default_factory=list)

    @field_validator("cidr")
    @classmethod
    def _is_a_network(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as error:
            raise ValueError(f"egress endpoint {value!r} is not a CIDR ({error})") from None

    @field_validator("ports")
    @classmethod
    def _are_ports(cls, value: list[int]) -> list[int]:
        wrong = [port for port in value if not 1 <= port <= 65535]
        if wrong:
            raise ValueError(f"egress endpoint ports {wrong} are outside 1-65535")
        return value


class AllowedToleration(BaseModel):
    """A toleration tenants may give their Ray pods. A spec's toleration is allowed when one
    entry has its key and, for each other field the entry sets, the same value (an entry
    without effect allows every effect)."""

    model_config = ConfigDict(extra="forbid")

    key: str = ""
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def admits(self, toleration: Any) -> bool:
        return (toleration.key or "") == self.key and all(
            getattr(self, name) is None or getattr(toleration, name) == getattr(self, name)
            for name in ("operator", "value", "effect"))


def describe_toleration(toleration: Any) -> str:
    """``key=value:effect (operator)``, as kubectl prints taints, for a refusal's message."""
    text = toleration.key or "<every key>"
    if toleration.value:
        text += f"={toleration.value}"
    if toleration.effect:
        text += f":{toleration.effect}"
    return text + (f" ({toleration.operator})" if toleration.operator else "")


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELEVAL_", extra="ignore")

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: "
                                  "the whole cluster.")
    ray_image: str = Field("modeleval/ray:0.1.0", description="Default image of the Ray pods.")
    ray_version: str = Field("2.60.0", description="Ray version in the image (KubeRay's rayVersion).")
    kueue_default_queue: str = Field("", pattern=r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$",
                                     description="The Kueue LocalQueue an evaluation's RayCluster "
                                     "waits in when its spec names none; empty: not queued.")
    mongodb_uri: SecretStr | None = Field(None, description="Results store the operator reads.")
    mongodb_secret: str = Field("modeleval-mongodb", description="Secret (key MONGODB_URI) the Ray "
                                "pods get the results store URI from, in each namespace.")
    mongodb_operator_databases: list[str] = Field(default_factory=lambda: ["modeleval"],
                                                  description="Databases the operator reads and "
                                                  "writes results in with its own credentials "
                                                  "(mongodb_uri); '{namespace}' stands for the "
                                                  "evaluation's namespace. Any other database a "
                                                  "spec names is served with the namespace's own "
                                                  "Secret (mongodb_secret).")
    s3_endpoint: str | None = Field(None, description="S3 endpoint the Ray pods use (MinIO etc.).")
    s3_secret: str = Field("modeleval-s3", description="Secret (keys AWS_ACCESS_KEY_ID, "
                           "AWS_SECRET_ACCESS_KEY) the Ray pods read S3 credentials from.")
    s3_instance_role: bool = Field(False, description="The cluster gives Ray pods S3 access "
                                   "through the node's (or pod's) cloud identity; otherwise the "
                                   "instance metadata endpoint is turned off in Ray pods "
                                   "(AWS_EC2_METADATA_DISABLED), so only the namespace's Secret "
                                   "can grant access.")
    cache_uri: str | None = Field(None, description="Parsed-dataset cache (s3://bucket/prefix); "
                                  "each namespace gets its own prefix below it.")
    # What a tenant may ask for: an evaluation asking for more fails with reason Forbidden.
    allowed_ray_images: list[str] = Field(default_factory=list, description="Images spec.rayImage "
                                          "may name (a trailing * matches a prefix). Empty: only "
                                          "ray_image, the chart's own.")
    reports: bool = Field(True, description="Whether each evaluation's runner writes its HTML "
                          "report (and computes the curves it plots); false: the runner is "
                          "passed --no-report.")
    allow_pickle: bool = Field(False, description="Whether any evaluation may load a pickle "
                               "model (pickle runs code); spec.model.allowPickle alone is not "
                               "enough.")
    max_workers: int = Field(64, ge=0, description="Most Ray workers per evaluation; 0: no limit.")
    max_gpus: int = Field(16, ge=0, description="Most GPUs per evaluation (workers x gpu); 0: "
                          "no limit.")
    max_worker_memory: str = Field("256Gi", description="Most memory per worker (and head); "
                                   "empty: no limit.")
    max_worker_cpu: str = Field("64", pattern=r"^([0-9]+(\.[0-9]+)?m?)?$", description="Most "
                                "CPU per worker (and head); empty: no limit.")
    allowed_tolerations: list[AllowedToleration] = Field(
        default_factory=lambda: [AllowedToleration(key="nvidia.com/gpu", operator="Exists")],
        description="Tolerations spec.tolerations may hold (the GPU nodes' usual taint by "
        "default); empty: none.")
    allowed_node_selectors: dict[str, list[str]] = Field(
        default_factory=dict, description="Node labels spec.nodeSelector may name, each with the "
        "values it may take (\"*\": any); empty: no nodeSelector.")
    max_active_per_namespace: int = Field(0, ge=0, description="At most this many evaluations "
                                          "of one namespace hold a RayCluster at once; the rest "
                                          "queue. 0: no limit.")
    poll_interval: float = Field(2.0, gt=0, description="Seconds between reconciles of a live run.")
    error_retry: float = Field(5.0, gt=0, le=300, description="Seconds before a reconcile (or a "
                               "deletion's clean-up) that failed because the API server or "
                               "another service did not answer runs again (kopf's own default "
                               "is 60: an evaluation would sit a minute after an API outage).")
    pending_timeout: float = Field(300.0, gt=0, description="Seconds a RayCluster may stay not "
                                   "ready before its job started (unschedulable pods, images "
                                   "that cannot be pulled, a missing Secret, a quota) before the "
                                   "evaluation fails with Unschedulable or PodsNotReady.")
    results_store_timeout: float = Field(3600.0, gt=0, description="Seconds after a job ended "
                                         "that its result may wait for MongoDB before the "
                                         "evaluation fails (metrics then go to status only).")
    head_lost_timeout: float = Field(600.0, gt=0, description="Seconds the Ray head of a running "
                                     "job may stay unreachable (or its RayCluster not ready) "
                                     "before the attempt counts as lost (RayHeadLost) and is "
                                     "retried on a fresh cluster. A replaced head is detected "
                                     "at once when it answers without the job.")
    max_active_per_schedule: int = Field(5, ge=0, description="At most this many children of "
                                         "one EvaluationSchedule are active at once: a cron run "
                                         "due beyond it is skipped, a new model waits. 0: no "
                                         "limit.")
    max_schedules_per_namespace: int = Field(20, ge=0, description="At most this many "
                                             "EvaluationSchedules of one namespace make runs "
                                             "(the oldest); the rest stay Ready=False. 0: no "
                                             "limit.")
    schedule_poll_interval: float = Field(10.0, gt=0, le=60, description="How often each "
                                          "EvaluationSchedule is looked at (cron times fall on "
                                          "whole minutes; a new model is seen within this "
                                          "once its prefix is listed).")
    trigger_list_interval: float = Field(60.0, gt=0, description="Seconds between two listings "
                                         "of one new-model trigger prefix with one namespace's "
                                         "credentials, however many schedules name it (each "
                                         "listing up to a quarter of this later, at random).")
    backoff_base: float = Field(10.0, ge=0, description="First retry delay; doubles per attempt.")
    backoff_max: float = Field(300.0, ge=0)
    job_submit_timeout: float = Field(10.0, gt=0)
    max_active_evaluations: int = Field(0, ge=0, description="At most this many evaluations "
                                        "hold a RayCluster of their own at once; the rest wait in "
                                        "Pending (Provisioned=False, Queued), oldest first. 0: no "
                                        "limit.")
    max_jobs_per_head: int = Field(8, ge=0, description="At most this many evaluations' Ray jobs "
                                   "run at once on one Ray head (a RayCluster shared through "
                                   "spec.rayClusterName); the rest queue, oldest first. 0: no limit.")
    # The test bed's seam: kwok pods run no Ray, so every RayCluster head is served by one local
    # Ray head. Unset in a real cluster, where the head service's dashboard port is used.
    ray_head_override_url: str | None = Field(None, description="Jobs API URL to use instead of "
                                              "the head service (the local test bed only).")
    ray_head_override_token: SecretStr | None = Field(None, description="That head's auth token.")
    cluster_domain: str = "cluster.local"
    operator_namespace: str | None = Field(None, description="The operator's own namespace (the "
                                           "chart sets it): the only one whose pods may reach a "
                                           "RayCluster's Jobs API through its NetworkPolicy.")
    operator_pod_labels: dict[str, str] = Field(default_factory=dict, description="Labels of "
                                                "the operator's own pods (the chart sets them): "
                                                "with operator_namespace, the only pods a "
                                                "RayCluster's NetworkPolicy admits to its Jobs API.")
    network_policy: bool = Field(True, description="Give each RayCluster a NetworkPolicy: its "
                                 "pods accept traffic only from each other, and the head's "
                                 "dashboard port also from the operator's pods; they reach "
                                 "nothing but egress_endpoints (by default anywhere but the "
                                 "cloud metadata address). Needs operator_namespace and "
                                 "operator_pod_labels.")
    egress_endpoints: list[EgressEndpoint] = Field(default_factory=list, description="Where Ray "
                                                   "pods may connect (S3, MongoDB, DNS) besides "
                                                   "each other. Empty: anywhere except the cloud "
                                                   "metadata address, unless s3_instance_role.")
    mlflow_tracking_uri: str | None = Field(None, pattern=r"^https?://[^\s]+$", description=
                                            "The platform's MLflow tracking server (http[s]://"
                                            "host[:port][/path]): models:/ URIs are resolved "
                                            "and promoted through it. Unset: they are refused.")
    mlflow_secret: str = Field("modeleval-mlflow", description="Secret in each evaluation's "
                               "namespace with its MLflow credentials (MLFLOW_TRACKING_USERNAME "
                               "and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN); the "
                               "operator has none of its own.")
    mlflow_artifacts_destination: str | None = Field(
        None, pattern=r"^s3://[^\s]+$", description="Where the MLflow server keeps the artefacts "
        "it serves (its --artifacts-destination, s3://bucket/prefix): a version whose source is "
        "mlflow-artifacts:/PATH is read from there.")
    mlflow_timeout: float = Field(10.0, gt=0, le=120, description="Seconds an MLflow request may "
                                  "take.")
    health_port: int = Field(8080, description="Liveness endpoint (/healthz).")
    metrics_port: int = Field(9090, description="Prometheus metrics (/metrics).")
    metrics_host: str = "0.0.0.0"
    refuse_file_uris: bool = Field(True, description="Refuse file:// URIs: a cluster reads object "
                                   "storage only.")
    # Events (CloudEvents to webhooks and Kafka): off until sinks are named.
    event_sinks: list[EventSink] = Field(default_factory=list, description="The platform's "
                                         "sinks: every evaluation's and schedule's events go "
                                         "to them (a webhook's secretRef is a Secret in "
                                         "operator_namespace).")
    allow_object_event_sinks: bool = Field(False, description="Whether a spec may name its own "
                                           "sinks (spec.events): the operator then connects "
                                           "where a tenant says.")
    events_backoff_base: float = Field(5.0, gt=0, description="First wait before an event a "
                                       "sink did not acknowledge is sent again; doubles per "
                                       "failure.")
    events_backoff_max: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _policy_names_the_operator_pods(self) -> "OperatorSettings":
        # Admitting the operator's whole namespace to every Jobs API would admit any pod there.
        if self.network_policy and self.operator_namespace and not self.operator_pod_labels:
            raise ValueError("MODELEVAL_OPERATOR_POD_LABELS must name the operator pod's labels "
                             "(a JSON object) when MODELEVAL_OPERATOR_NAMESPACE is set and "
                             "MODELEVAL_NETWORK_POLICY is true")
        metadata = [e.cidr for e in self.egress_endpoints if e.cidr in METADATA_NETWORKS]
        if metadata and not self.s3_instance_role:
            raise ValueError(f"MODELEVAL_EGRESS_ENDPOINTS lists the cloud metadata address "
                             f"{metadata[0]}, which only MODELEVAL_S3_INSTANCE_ROLE opens")
        return self
