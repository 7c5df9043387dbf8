"""The second half of a webhook's journey: from a committed PROCESSING row to an outcome.

May import `app.store` and the shared modules; never `app.web`.
"""
