"""Where transactions live: the table, the hot statements, and the queries both halves share.

Imports nothing from `app.web` or `app.processing`: the web edge and the worker import this.
"""
