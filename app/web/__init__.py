"""The HTTP edge: routes, body reading and parsing, the one error shape, signatures, tokens,
request logs, and the Gunicorn worker class that answers Gunicorn's own errors in that shape.

May import `app.store` and the shared modules (config, metrics, logs); never `app.processing`'s
tasks, and nothing imports it but `create_app`.
"""
