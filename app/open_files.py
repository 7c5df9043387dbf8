"""Open files: every connection a process holds is one, a web client's or a processor call's.

Many systems start a process with a soft limit of 1,024 open files under a far higher
hard one, and past the soft limit every accept() and connect() fails. So the web and
the worker raise it to the hard limit at start, as nginx's worker_rlimit_nofile does,
and hold no more connections at once than it leaves room for: Gunicorn's
worker_connections (gunicorn.conf.py), the worker's green threads, each calling the
processor for a batch (app/config.py). Children inherit the raised limit.
"""

import resource

# For what else a process keeps open: its database pool, logs, metrics files, the
# broker's and the listening sockets.
KEPT_FREE = 200


# What to ask for under a hard limit of "unlimited" (macOS's): the most a macOS process
# may open (OPEN_MAX), and more than either process here holds.
UNLIMITED_ASK = 10_240


def raise_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = UNLIMITED_ASK if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # refused: keep the limit there is
        pass


def connections_allowed() -> int:
    """How many connections this process may hold at once, under its limit now."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_ASK - KEPT_FREE
    return max(soft - KEPT_FREE, 1)
