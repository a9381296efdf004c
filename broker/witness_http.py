"""The HTTP side of feeding an outside witness: one add-checkpoint POST (c2sp.org/tlog-witness).

A plain ``http.client`` request with a deadline on connecting and on each read, no
redirects followed (a witness's URL is the operator's, from the cluster file, never a
client's), and a body read only up to ``max_bytes``: a witness that sends more is not one.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse

from ..node.errors import WitnessRequestError
from ..node.outside import MAX_REPLY_BYTES, WitnessReply

ADD_CHECKPOINT = "/add-checkpoint"
USER_AGENT = "vledger-witness-feeder"


def post_add_checkpoint(prefix: str, body: bytes, timeout: float, max_bytes: int = MAX_REPLY_BYTES) -> WitnessReply:
    """POST ``body`` to ``<prefix>/add-checkpoint`` and return the witness's answer.

    Raises OSError (http.client.HTTPException included) when the witness cannot be reached
    or does not answer within ``timeout`` seconds per step, and WitnessRequestError
    [bad_witness_message] when its body is over ``max_bytes``.
    """
    url = urllib.parse.urlsplit(prefix + ADD_CHECKPOINT)
    host = url.hostname or ""
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(host, url.port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, url.port, timeout=timeout)
    try:
        conn.request("POST", url.path, body, {"Content-Type": "text/plain", "User-Agent": USER_AGENT})
        response = conn.getresponse()
        data = response.read(max_bytes + 1)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        status = response.status
    except http.client.HTTPException as e:
        raise OSError(f"{host}: {e!r}") from e
    finally:
        conn.close()
    if len(data) > max_bytes:
        raise WitnessRequestError(f"the witness at {host} answered more than {max_bytes} bytes")
    return WitnessReply(status, content_type, data)
