"""Progress lines: stage changes keep the last step and loss (the status takes reports whole)."""

from __future__ import annotations

import io
import json

from kubetune_crd.status import Progress
from kubetune_trainer.progress import ProgressReporter


def test_stage_after_training_steps_keeps_step_loss_and_fraction() -> None:
    out = io.StringIO()
    reporter = ProgressReporter(stream=out)
    reporter.stage("training")
    reporter.report(Progress(fraction=0.5, step=9, total_steps=18, loss=2.5, stage="training"))
    reporter.stage("saving")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["stage", "progress", "stage"]
    assert lines[0]["step"] == 0 and lines[0]["stage"] == "training"
    last = lines[-1]
    assert last["stage"] == "saving"
    assert (last["step"], last["totalSteps"], last["loss"], last["fraction"]) == (9, 18, 2.5, 0.5)


class _Endpoint:
    """A real HTTP endpoint on 127.0.0.1 that records the reports it accepts; it answers 503
    to the first `refuse` POSTs (an operator restarting)."""

    def __init__(self, refuse: int = 0) -> None:
        import http.server
        import threading

        self.bodies: list[dict[str, object]] = []
        self.refused = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.refused < refuse:
                    outer.refused += 1
                    self.send_response(503)
                else:
                    outer.bodies.append(body)
                    self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/progress/ns/job"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def points(self) -> list[tuple[str, int, float]]:
        out = []
        for body in self.bodies:
            for p in body.get("points") or []:  # type: ignore[union-attr]
                out.append((p.get("kind", "train"), p["step"], p["loss"]))
        return out


def test_every_point_reaches_the_endpoint_even_when_reports_come_faster() -> None:
    """The status part is coalesced, the points never are: 500 steps reported at once."""
    endpoint = _Endpoint()
    reporter = ProgressReporter(endpoint.url, stream=io.StringIO())
    reporter.eval(0, 3.0)
    for step in range(1, 501):
        reporter.report(Progress(step=step, total_steps=500, loss=1 + 1 / step))
    reporter.stage("saving")  # a stage report adds no point
    reporter.eval(500, 1.5)
    reporter.close(timeout=30)
    endpoint.server.shutdown()
    got = endpoint.points()
    assert [s for k, s, _ in got if k == "train"] == list(range(1, 501))
    assert [(s, v) for k, s, v in got if k == "eval"] == [(0, 3.0), (500, 1.5)]
    assert all(len(b["points"]) <= 200 for b in endpoint.bodies)  # type: ignore[arg-type]
    assert endpoint.bodies[-1]["step"] == 500  # the newest progress rides along


def test_points_wait_for_an_endpoint_that_refuses_for_a_while() -> None:
    import time

    endpoint = _Endpoint(refuse=3)
    reporter = ProgressReporter(endpoint.url, stream=io.StringIO())
    for step in range(1, 6):
        reporter.report(Progress(step=step, loss=2.0))
        deadline = time.monotonic() + 10
        while endpoint.refused < min(step, 3) and time.monotonic() < deadline:
            time.sleep(0.01)  # each of the first three reports is refused on its own
    reporter.close(timeout=10)
    endpoint.server.shutdown()
    assert endpoint.refused == 3
    assert sorted({s for _, s, _ in endpoint.points()}) == [1, 2, 3, 4, 5]
