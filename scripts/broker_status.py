"""Print the broker's status as GET /health/ready reports it: up, down, or why it is unknown.

./start_services.sh warns unless it is up. A 503 (the database down) still carries the
components, so the broker's state is read from it too.
"""

import json
import sys
import urllib.error
import urllib.request


def broker_status(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
    except urllib.error.HTTPError as error:  # 503: not ready, components still there
        body = error.read()
    except OSError as error:
        return f"no answer: {error}"
    try:
        return json.loads(body)["components"]["broker"]["status"]
    except (ValueError, KeyError, TypeError):
        return "an answer without the broker's status"


if __name__ == "__main__":
    print(broker_status(sys.argv[1]))
