"""`ClusterStore`: the API's one connection to the apiserver and the stores sharing it."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from urllib3.util.retry import Retry

from kubetune_api.settings import Settings
from kubetune_api.store.api_key_secrets import ApiKeySecrets
from kubetune_api.store.claims import IdempotencyClaims
from kubetune_api.store.finetunejobs import FineTuneJobs
from kubetune_api.store.job_cache import ALL_NAMESPACES
from kubetune_api.store.metric_histories import MetricHistories
from kubetune_api.store.registry import ModelRegistry
from kubetune_api.store.trainer_pods import TrainerPods


def make_api_client(kubeconfig: str | None, pool_size: int) -> k8s.ApiClient:
    """An ApiClient of its own (no global configuration): kubeconfig, in-cluster, default."""
    configuration = k8s.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    # A refused connection is tried three times within a second and a read (GET only, as
    # urllib3 never repeats a write once sent) twice: an unreachable apiserver is answered
    # 503 in about a second (urllib3's default tries four times, each up to the timeout).
    configuration.retries = Retry(total=2, connect=2, read=1, backoff_factor=0.2)
    return k8s.ApiClient(configuration)


@dataclass
class ClusterStore:
    """FineTuneJobs, idempotency claims, trainer pods, API key Secrets, the model registry and
    the jobs' metric histories over one client."""

    api_client: k8s.ApiClient
    jobs: FineTuneJobs
    claims: IdempotencyClaims
    pods: TrainerPods
    api_keys: ApiKeySecrets
    registry: ModelRegistry
    histories: MetricHistories

    @classmethod
    def connect(cls, settings: Settings) -> ClusterStore:
        """The stores for these settings (nothing is listed until `start`)."""
        api_client = make_api_client(settings.kubeconfig, settings.client_pool_size)
        core = k8s.CoreV1Api(api_client)
        scopes = [ALL_NAMESPACES] if settings.watch_cluster_wide else [settings.namespace]
        jobs = FineTuneJobs(
            k8s.CustomObjectsApi(api_client),
            scopes=scopes,
            read_mode=settings.read_mode,
            watch_timeout=settings.watch_timeout_seconds,
            max_staleness=settings.cache_max_staleness_seconds,
        )
        return cls(
            api_client,
            jobs,
            IdempotencyClaims(core),
            TrainerPods(core),
            ApiKeySecrets(core),
            ModelRegistry(k8s.CustomObjectsApi(api_client)),
            MetricHistories(core),
        )

    def start(self) -> None:
        self.jobs.start()

    def stop(self) -> None:
        self.jobs.stop()
        self.api_client.close()
