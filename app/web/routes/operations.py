"""For operators and platforms: liveness, readiness and metrics."""

from flask import Response, current_app

from app import metrics
from app.extensions import db
from app.store.models import utcnow
from app.web.api import Blueprint, problem_responses
from app.web.auth import Role, requires
from app.web.errors import problem
from app.web.readiness import check_components
from app.web.schemas import HealthSchema, ReadinessSchema, to_iso8601

blp = Blueprint("operations", __name__, description="Liveness, readiness and metrics.")


@blp.get("/")
@blp.response(200, HealthSchema)
def liveness():
    """Answers while the web process runs; it does not touch the database."""
    return {"status": "HEALTHY", "current_time": to_iso8601(utcnow(), timespec="seconds")}


@blp.get("/health/ready")
@blp.response(200, ReadinessSchema)
@blp.doc(
    responses=problem_responses({503: "The database does not answer; `components` says more."})
)
def readiness():
    """Whether the database (SELECT 1) and the broker (a connection) answer, within 2 s each.

    Only the database makes an instance unready: a web process never talks to the broker
    (the committed row is the outbox), so while Redis is down it still accepts webhooks,
    and a 503 would have the load balancer turn them away. The broker is reported."""
    components = check_components(db.engine, current_app.extensions["celery"])
    if components["database"]["status"] != "up":
        return problem(
            503,
            "Service Unavailable",
            "Not ready: the database did not answer.",
            headers={"Retry-After": "5"},
            extra={"components": components},
        )
    return {"status": "READY", "components": components}


@blp.get("/metrics")
@requires(Role.READ)  # Prometheus sends it: authorization.credentials in scrape_config
@blp.doc(
    responses={"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}}
)
def prometheus_metrics():
    """This instance's processes: every Gunicorn worker, and the Celery worker on its disk."""
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


@blp.get("/metrics/pipeline")
@requires(Role.READ)
@blp.doc(
    responses={"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}}
)
def pipeline_metrics():
    """Database-wide gauges (waiting, due, FAILED, oldest PROCESSING): scrape one instance."""
    body, content_type = metrics.render_pipeline()
    return Response(body, content_type=content_type)
