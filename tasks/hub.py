"""Whether the Hugging Face hub can be reached (for the language-modelling task's datasets and tokenizers): an offline
variable says no at once, and a connection that does not open within 3 s says no within seconds."""

import os
import socket
import threading
from functools import lru_cache
from urllib.parse import urlparse


def hub_unavailable() -> str | None:
    """Why the hub cannot be reached (an offline variable, or no connection within 3 s), or None if it can."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes", "on"):
            return f"{var}={os.environ[var]}"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct connection says nothing: let `datasets` try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    return unreachable(host)


@lru_cache(maxsize=4)
def unreachable(host: str) -> str | None:
    """Why no connection to host:443 opened within 3 s (checked once per process), or None if one did."""
    result: list = []

    def connect():
        try:
            socket.create_connection((host, 443), timeout=3).close()
            result.append(None)
        except OSError as e:
            result.append(f"cannot connect to {host}: {e}")

    thread = threading.Thread(target=connect, daemon=True)  # name resolution has no timeout of its own
    thread.start()
    thread.join(3.5)
    return result[0] if result else f"no answer from {host} within 3 s"
