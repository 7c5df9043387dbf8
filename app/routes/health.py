from app.api import Blueprint
from app.models import utcnow
from app.schemas import HealthSchema, to_iso8601

blp = Blueprint("health", __name__, description="Liveness.")


@blp.get("/")
@blp.response(200, HealthSchema)
def liveness():
    """Answers while the web process runs; it does not touch the database."""
    return {"status": "HEALTHY", "current_time": to_iso8601(utcnow(), timespec="seconds")}
