"""Wait until a local HTTP server answers: `python scripts/wait_for_server.py URL PID SECONDS`.

Exit 0 once any HTTP answer comes from URL (a 404 is an answer: the server is up); exit 1,
saying why in one line, when the process PID has ended first or SECONDS have passed. Used
by scripts/demo.sh for the worker's `python handler.py --rp_serve_api`, which takes a few
seconds to import the SDK and start uvicorn.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process of that number: not ours, but there
        return True
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python scripts/wait_for_server.py URL PID SECONDS", file=sys.stderr)
        return 2
    url, pid, seconds = argv[0].rstrip("/"), int(argv[1]), float(argv[2])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            print(
                f"wait_for_server: the server (PID {pid}) ended before answering", file=sys.stderr
            )
            return 1
        try:
            with opener.open(f"{url}/openapi.json", timeout=2):
                return 0
        except urllib.error.HTTPError:  # an HTTP answer, whatever its status
            return 0
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)  # polling a port that is not open yet, with a deadline
    print(f"wait_for_server: {url} did not answer in {seconds:g} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
