"""The progress endpoint: trainers POST `Progress` JSON here; it lands in the status in < 10 s.

Why this mechanism (Kubeflow's direction, see docs/DESIGN.md): the alternative, a
trainer ServiceAccount allowed to patch `finetunejobs/status`, would let a trainer rewrite its
own phase, model and failure (or those of every FineTuneJob in its namespace): RBAC cannot
narrow a verb to one object created later, nor to one field. Here the trainer pod holds only a
projected service-account token with audience `kubetune-progress`. The API server rejects
that audience for every API call, so the token opens nothing but this endpoint, which:

1. checks the token with a TokenReview for that audience (cached for a minute by hash);
2. requires the token's service account to live in the URL's namespace and its bound pod
   (`authentication.kubernetes.io/pod-name` in the user's extra) to be a trainer pod of the
   FineTuneJob named in the URL (labels and owner Job checked against the operator's cache);
3. keeps only `ProgressReport` fields (pydantic drops anything else) and patches
   `status.progress` alone, coalesced to at most one patch per job per
   `KUBETUNE_PROGRESS_MIN_INTERVAL` seconds (default 2 s): the last report always lands;
4. hands the report's metric points (every one, not coalesced) to the metric history
   (`metric_history_writer.py`, the job's `<job>-metrics` ConfigMap). A report without
   `points` (an older trainer) counts as one train point made of its step and loss.

Progress is best effort for the trainer: it never fails because this endpoint is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from kubetune_crd import names
from kubetune_crd.metric_history import MetricPoint, ProgressReport
from kubetune_crd.status import Progress
from kubetune_crd.trainer_contract import PROGRESS_AUDIENCE
from pydantic import ValidationError

from kubetune_operator.kube import ApiError, KubeClient

log = logging.getLogger("kubetune.operator.progress")

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
SA_PREFIX = "system:serviceaccount:"

Key = tuple[str, str]
# (namespace, ftj name, pod name, pod uid or None) -> True when the pod is a trainer of the ftj
PodCheck = Callable[[str, str, str, str | None], Awaitable[bool]]
# (namespace, name, progress) -> patch the status (raises on failure)
ProgressWriter = Callable[[str, str, Progress], Awaitable[None]]
# (namespace, name, points, total steps) -> queue points for the job's metric history
PointSink = Callable[[str, str, list[MetricPoint], int | None], None]


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to, as the TokenReview said."""

    namespace: str
    service_account: str
    pod_name: str | None
    pod_uid: str | None


def identity_from_review(review: dict[str, Any]) -> Identity | None:
    """The service account and bound pod of an authenticated review, else None (pure)."""
    status = review.get("status") or {}
    if not status.get("authenticated"):
        return None
    audiences = status.get("audiences")
    if audiences is not None and PROGRESS_AUDIENCE not in audiences:
        return None
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if not username.startswith(SA_PREFIX):
        return None
    parts = username[len(SA_PREFIX) :].split(":")
    if len(parts) != 2:
        return None
    extra = user.get("extra") or {}
    pod_names = extra.get(POD_NAME_EXTRA) or []
    pod_uids = extra.get(POD_UID_EXTRA) or []
    return Identity(
        namespace=parts[0],
        service_account=parts[1],
        pod_name=str(pod_names[0]) if pod_names else None,
        pod_uid=str(pod_uids[0]) if pod_uids else None,
    )


def points_of(report: ProgressReport, progress: Progress) -> list[MetricPoint]:
    """The report's points; for a report without any (an older trainer), its own step and
    loss as one train point (pure)."""
    if report.points is not None:
        return report.points
    if progress.loss is None or progress.step <= 0:
        return []
    fields = progress.model_dump(include={"step", "loss", "learning_rate", "tokens_per_second"})
    return [MetricPoint(**fields, epoch=progress.epoch, updated_at=progress.updated_at)]


class ProgressServer:
    """aiohttp app inside the operator process (started and stopped by the handlers)."""

    def __init__(
        self,
        client: KubeClient,
        pod_check: PodCheck,
        writer: ProgressWriter,
        *,
        min_interval: float = 2.0,
        review_ttl: float = 60.0,
        points: PointSink | None = None,
    ) -> None:
        self._client = client
        self._points = points
        self._pod_check = pod_check
        self._writer = writer
        self._min_interval = min_interval
        self._review_ttl = review_ttl
        self._reviews: dict[str, tuple[float, Identity | None]] = {}
        self._latest: dict[Key, Progress] = {}
        self._last_write: dict[Key, float] = {}
        self._flushers: dict[Key, asyncio.Task[None]] = {}
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.accepted = 0
        self.rejected = 0

    def latest(self, namespace: str, name: str) -> Progress | None:
        return self._latest.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._latest.pop(key, None)
        self._last_write.pop(key, None)
        task = self._flushers.pop(key, None)
        if task is not None:
            task.cancel()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/progress/{namespace}/{name}", self.handle)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        log.info("progress endpoint listening on %s:%s", host, self.port)
        return self.port

    async def stop(self) -> None:
        for task in self._flushers.values():
            task.cancel()
        self._flushers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _review(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._reviews.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [PROGRESS_AUDIENCE]},
        }
        review = await self._client.post("/apis/authentication.k8s.io/v1/tokenreviews", body)
        identity = identity_from_review(review)
        if len(self._reviews) > 10000:
            self._reviews = {k: v for k, v in self._reviews.items() if v[0] > now}
        # Rejections are cached briefly too, so a misbehaving client cannot flood the API.
        self._reviews[digest] = (now + (self._review_ttl if identity else 5.0), identity)
        return identity

    async def handle(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or len(auth) < 10:
            self.rejected += 1
            return web.json_response({"error": "bearer token required"}, status=401)
        try:
            identity = await self._review(auth[len("Bearer ") :].strip())
        except (ApiError, OSError) as exc:
            log.warning("TokenReview failed: %s", exc)
            return web.json_response({"error": "cannot review the token now"}, status=503)
        if identity is None:
            self.rejected += 1
            return web.json_response({"error": "token rejected"}, status=401)
        if identity.namespace != namespace or identity.pod_name is None:
            self.rejected += 1
            return web.json_response({"error": "token not bound to a pod here"}, status=403)
        if not await self._pod_check(namespace, name, identity.pod_name, identity.pod_uid):
            self.rejected += 1
            return web.json_response({"error": "pod is not a trainer of this job"}, status=403)
        try:
            payload = await request.json()
            report = ProgressReport.model_validate(payload)
        except (ValueError, ValidationError) as exc:
            return web.json_response({"error": f"invalid progress: {exc}"[:500]}, status=400)
        progress = report.progress()
        if progress.updated_at is None:
            progress = progress.model_copy(update={"updated_at": names.now_rfc3339()})
        self.accepted += 1
        self.submit(namespace, name, progress)
        if self._points is not None:
            self._points(namespace, name, points_of(report, progress), progress.total_steps)
        return web.json_response({"accepted": True}, status=202)

    def submit(self, namespace: str, name: str, progress: Progress) -> None:
        """Keep the newest report and make sure it is written within `min_interval`."""
        key = (namespace, name)
        self._latest[key] = progress
        if key in self._flushers:
            return  # a pending flush writes the newest report
        self._flushers[key] = asyncio.create_task(self._flush(key))

    async def _flush(self, key: Key) -> None:
        try:
            while True:
                wait = self._last_write.get(key, 0.0) + self._min_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                progress = self._latest.get(key)
                if progress is None:
                    return
                self._last_write[key] = time.monotonic()
                try:
                    await self._writer(key[0], key[1], progress)
                except (ApiError, OSError) as exc:
                    log.warning("progress patch for %s/%s failed: %s", key[0], key[1], exc)
                if self._latest.get(key) is progress:
                    return
        finally:
            self._flushers.pop(key, None)
