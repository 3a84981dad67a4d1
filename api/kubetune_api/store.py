"""FineTuneJobs in the apiserver: writes go there, reads come from a watch-backed cache.

`JobCache` holds the current objects; one `Informer` thread per scope (one namespace, or the
whole cluster) keeps it current the way client-go's informers do: a paginated LIST gives the
objects and a resourceVersion, a WATCH from that resourceVersion (with bookmarks) streams the
changes, a dropped watch resumes from the last resourceVersion seen, and `410 GoneError` (the
version was compacted away) triggers a fresh LIST that replaces the scope's contents.

Writes (create, cancel) put the object the apiserver answered into the cache at once, so a
client that reads right after a 202 finds its job (read-your-writes on this replica).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubetune_crd.resource import GROUP, PLURAL, VERSION

from kubetune_api.views import JobRecord, record_from_obj, rv_int

log = logging.getLogger(__name__)

ALL_NAMESPACES = ""


class ConflictError(Exception):
    """The object already exists (409)."""


class NotFoundError(Exception):
    """The object does not exist (404)."""


class StoreUnavailableError(Exception):
    """The apiserver could not be reached or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
    return k8s.ApiClient(configuration)


class JobCache:
    """Thread-safe map (namespace, name) -> JobRecord, with an index by idempotency hash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], JobRecord] = {}
        self._by_ns: dict[str, dict[str, JobRecord]] = {}
        self._idem: dict[tuple[str, str], tuple[str, str]] = {}

    def _put(self, rec: JobRecord) -> None:
        old = self._items.get(rec.key)
        if old is not None and old.idempotency_hash:
            self._idem.pop((old.namespace, old.idempotency_hash), None)
        self._items[rec.key] = rec
        self._by_ns.setdefault(rec.namespace, {})[rec.name] = rec
        if rec.idempotency_hash:
            self._idem[(rec.namespace, rec.idempotency_hash)] = rec.key

    def _drop(self, key: tuple[str, str]) -> None:
        old = self._items.pop(key, None)
        if old is None:
            return
        ns_items = self._by_ns.get(old.namespace)
        if ns_items is not None:
            ns_items.pop(old.name, None)
            if not ns_items:
                del self._by_ns[old.namespace]
        if old.idempotency_hash:
            self._idem.pop((old.namespace, old.idempotency_hash), None)

    def upsert(self, rec: JobRecord) -> None:
        """Keep the newer of the cached and the given version (resourceVersion order)."""
        with self._lock:
            old = self._items.get(rec.key)
            if old is not None and old.uid == rec.uid:
                old_rv, new_rv = rv_int(old.resource_version), rv_int(rec.resource_version)
                if old_rv is not None and new_rv is not None and new_rv < old_rv:
                    return
            self._put(rec)

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            self._drop((namespace, name))

    def replace(self, scope: str, records: list[JobRecord]) -> None:
        """Set the contents of a scope (a namespace, or ALL_NAMESPACES) after a LIST."""
        with self._lock:
            stale = [key for key in self._items if scope == ALL_NAMESPACES or key[0] == scope]
            for key in stale:
                self._drop(key)
            for rec in records:
                self._put(rec)

    def get(self, namespace: str, name: str) -> JobRecord | None:
        return self._items.get((namespace, name))

    def in_namespace(self, namespace: str) -> list[JobRecord]:
        with self._lock:
            return list(self._by_ns.get(namespace, {}).values())

    def all(self) -> list[JobRecord]:
        with self._lock:
            return list(self._items.values())

    def by_idempotency(self, namespace: str, key_hash: str) -> JobRecord | None:
        with self._lock:
            key = self._idem.get((namespace, key_hash))
            return self._items.get(key) if key else None


class GoneError(Exception):
    """The watch's resourceVersion is too old (410): LIST again."""


class Informer:
    """LIST + WATCH of FineTuneJobs in one scope, in a daemon thread, feeding a JobCache."""

    def __init__(
        self,
        api: k8s.CustomObjectsApi,
        cache: JobCache,
        scope: str,
        *,
        watch_timeout: int = 300,
        page_size: int = 500,
    ) -> None:
        self.api = api
        self.cache = cache
        self.scope = scope
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.restarts = 0
        self.relists = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"informer-{scope or 'all'}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.close()
        self._thread.join(timeout=5)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _list_call(self, **kwargs: Any) -> Any:
        if self.scope == ALL_NAMESPACES:
            return self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
        return self.api.list_namespaced_custom_object(GROUP, VERSION, self.scope, PLURAL, **kwargs)

    def _relist(self) -> None:
        records: list[JobRecord] = []
        token: str | None = None
        rv = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size, "_request_timeout": 60}
            if token:
                kwargs["_continue"] = token
            page = _as_dict(self._list_call(**kwargs))
            records.extend(record_from_obj(obj) for obj in page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = str(meta.get("resourceVersion", rv))
            token = meta.get("continue")
            if not token:
                break
        self.cache.replace(self.scope, records)
        self.resource_version = rv
        self.relists += 1
        self.synced.set()
        log.info(
            "cache listed",
            extra={"scope": self.scope or "*", "objects": len(records), "resource_version": rv},
        )

    def _events(self) -> Iterator[dict[str, Any]]:
        response = self._list_call(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(10, self.watch_timeout + 30),
        )
        self._response = response
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                if self._stop.is_set():
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            self._response = None
            response.release_conn()

    def _watch_once(self) -> None:
        for event in self._events():
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                code = obj.get("code")
                if code == 410:
                    raise GoneError(obj.get("message", "gone"))
                raise StoreUnavailableError(f"watch error: {obj.get('message', obj)}")
            meta = obj.get("metadata") or {}
            rv = meta.get("resourceVersion")
            if kind in ("ADDED", "MODIFIED"):
                self.cache.upsert(record_from_obj(obj))
            elif kind == "DELETED":
                self.cache.delete(str(meta.get("namespace", "")), str(meta.get("name", "")))
            if rv:
                self.resource_version = str(rv)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                self._watch_once()
                backoff = 0.2
            except GoneError:
                log.info("watch expired (410), listing again", extra={"scope": self.scope or "*"})
                self.resource_version = None
            except ApiException as exc:
                if exc.status == 410:
                    self.resource_version = None
                    continue
                self._failed(f"apiserver answered {exc.status}: {exc.reason}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._failed(f"{type(exc).__name__}: {exc}")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _failed(self, message: str) -> None:
        self.restarts += 1
        self.last_error = message
        log.warning("watch interrupted, resuming", extra={"scope": self.scope, "error": message})


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise StoreUnavailableError(f"unexpected apiserver answer: {type(obj).__name__}")
    return obj


def _raise_for(exc: ApiException) -> None:
    if exc.status == 409:
        raise ConflictError(str(exc.reason)) from exc
    if exc.status == 404:
        raise NotFoundError(str(exc.reason)) from exc
    body = exc.body.decode() if isinstance(exc.body, bytes) else exc.body
    raise StoreUnavailableError(
        f"apiserver answered {exc.status}: {body or exc.reason}", status=exc.status
    ) from exc


class JobStore:
    """The API's view of the cluster: cached reads, direct writes, events and logs."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        *,
        scopes: list[str],
        read_mode: str = "cache",
        watch_timeout: int = 300,
    ) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.cache = JobCache()
        self.read_mode = read_mode
        self.informers = [
            Informer(self.custom, self.cache, scope, watch_timeout=watch_timeout)
            for scope in scopes
        ]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for informer in self.informers:
            if not informer.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()
        self.api_client.close()

    def covers(self, namespace: str) -> bool:
        return any(i.scope in (ALL_NAMESPACES, namespace) for i in self.informers)

    # -- reads -------------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> JobRecord | None:
        """Cached read (or one apiserver GET in `direct` read mode)."""
        if self.read_mode == "direct":
            return self.get_direct(namespace, name)
        return self.cache.get(namespace, name)

    def get_direct(self, namespace: str, name: str) -> JobRecord | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            _raise_for(exc)
            raise
        return record_from_obj(_as_dict(obj))

    def list_jobs(self, namespace: str) -> list[JobRecord]:
        if self.read_mode == "direct":
            try:
                page = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
            except ApiException as exc:
                _raise_for(exc)
                raise
            return [record_from_obj(o) for o in _as_dict(page).get("items") or []]
        return self.cache.in_namespace(namespace)

    # -- writes ------------------------------------------------------------------------------
    def create(self, namespace: str, body: dict[str, Any]) -> JobRecord:
        try:
            obj = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _request_timeout=30
            )
        except ApiException as exc:
            _raise_for(exc)
            raise
        return self._remember(obj)

    def request_cancel(self, namespace: str, name: str) -> JobRecord:
        try:
            obj = self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"spec": {"cancel": True}},
                _request_timeout=30,
            )
        except ApiException as exc:
            _raise_for(exc)
            raise
        return self._remember(obj)

    def _remember(self, obj: Any) -> JobRecord:
        """The record of an object the apiserver just returned, in the cache at once (the
        watch event follows): a read right after a write sees it."""
        rec = record_from_obj(_as_dict(obj))
        self.cache.upsert(rec)
        return rec

    # -- idempotency claims (ConfigMaps) -----------------------------------------------------
    def create_claim(
        self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]
    ) -> None:
        body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name, labels=labels), data=data)
        try:
            self.core.create_namespaced_config_map(namespace, body, _request_timeout=30)
        except ApiException as exc:
            _raise_for(exc)

    def read_claim(self, namespace: str, name: str) -> dict[str, str]:
        try:
            cm = self.core.read_namespaced_config_map(name, namespace, _request_timeout=30)
        except ApiException as exc:
            _raise_for(exc)
            raise
        return dict(cm.data or {})

    def own_claim(self, namespace: str, name: str, owner: JobRecord) -> None:
        """Make the claim a dependent of its FineTuneJob (deleted with it). Best effort."""
        if not owner.uid:
            return
        patch = {
            "metadata": {
                "ownerReferences": [
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "FineTuneJob",
                        "name": owner.name,
                        "uid": owner.uid,
                    }
                ]
            }
        }
        try:
            self.core.patch_namespaced_config_map(name, namespace, patch, _request_timeout=30)
        except ApiException as exc:
            log.warning("could not own claim %s/%s: %s", namespace, name, exc.reason)

    # -- events and logs ---------------------------------------------------------------------
    def trainer_pods(self, namespace: str, name: str) -> list[Any]:  # V1Pod
        pods: dict[str, Any] = {}
        for selector in (f"job-name={name}", f"kubetune.io/finetunejob={name}"):
            try:
                found = self.core.list_namespaced_pod(
                    namespace, label_selector=selector, _request_timeout=30
                )
            except ApiException as exc:
                _raise_for(exc)
                raise
            for pod in found.items or []:
                pods[str(pod.metadata.name if pod.metadata else "")] = pod
        return sorted(pods.values(), key=lambda p: (p.metadata.creation_timestamp, p.metadata.name))

    def events(self, namespace: str, name: str) -> list[Any]:
        """Events about the FineTuneJob, its Job (same name) and its pods."""
        names = {name} | {p.metadata.name for p in self.trainer_pods(namespace, name)}
        out: list[Any] = []
        for involved in sorted(names):
            try:
                found = self.core.list_namespaced_event(
                    namespace,
                    field_selector=f"involvedObject.name={involved}",
                    _request_timeout=30,
                )
            except ApiException as exc:
                _raise_for(exc)
                raise
            out.extend(found.items)
        return out

    def open_logs(self, namespace: str, pod: Any, *, follow: bool, tail_lines: int | None) -> Any:
        """The streaming urllib3 response of the pod's log (trainer container)."""
        containers = [c.name for c in (pod.spec.containers or [])]
        container = (
            "trainer" if "trainer" in containers else (containers[0] if containers else None)
        )
        kwargs: dict[str, Any] = {
            "follow": follow,
            "_preload_content": False,
            "_request_timeout": (10, 3600 if follow else 60),
        }
        if container:
            kwargs["container"] = container
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            return self.core.read_namespaced_pod_log(pod.metadata.name, namespace, **kwargs)
        except ApiException as exc:
            _raise_for(exc)
            raise

    # -- API keys ------------------------------------------------------------------------------
    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace, _request_timeout=30)
        except ApiException as exc:
            if exc.status == 404:
                return None
            _raise_for(exc)
            raise
        return {
            str(k): v if isinstance(v, str) else v.decode() for k, v in (secret.data or {}).items()
        }


def stream_lines(response: Any, should_stop: Callable[[], bool]) -> Iterator[bytes]:
    """Chunks of a streaming urllib3 response until it ends or `should_stop()`."""
    try:
        for chunk in response.stream(amt=None, decode_content=True):
            if should_stop():
                break
            if chunk:
                yield chunk
    finally:
        response.release_conn()
