"""The HTTP edge: routes, body parsing, the one error shape, signatures, tokens, request logs.

May import `app.store` and the shared modules (config, metrics, logs); never `app.processing`'s
tasks, and nothing imports it but `create_app`.
"""
