"""Re-sending a request with credentials after a 401/407 (RFC 3261 section 22.2).

Shared by the B2BUA (INVITE, BYE, relayed requests, probes) and trunk registration.
"""

from __future__ import annotations

import logging

from gateway.sip.auth import AuthError, DigestClient, choose_challenge
from gateway.sip.message import Request, Response

log = logging.getLogger("gateway.auth")


def authorized_retry(
    request: Request,
    response: Response,
    client: DigestClient,
    *,
    seq: int,
    branch: str,
    tries: int,
    who: str,
) -> tuple[Request, str] | None:
    """``request`` again, with the next CSeq, a new branch and the answer to the challenge,
    and the challenge's realm (for preemptive credentials on later requests, RFC 7616
    section 3.4: the same nonce with the next nc).

    ``tries`` is how many challenges were already answered for it: a second challenge is
    answered only when it says ``stale=true`` (same credentials, new nonce); otherwise the
    credentials were refused and None is returned, as for an unusable challenge.
    """
    header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
    challenge = choose_challenge(response.values(header))
    if challenge is None:
        log.info("%s: unusable %d challenge from %s", request.method, response.status, who)
        return None
    if tries >= 2 or (tries == 1 and not challenge.stale):
        log.warning("%s refused the credentials (%d to %s)", who, response.status,
                    request.method)
        return None
    try:
        value = client.authorization(challenge, request.method, request.uri_text, request.body)
    except AuthError as err:
        log.warning("%s: cannot answer the challenge: %s", who, err)
        return None
    via = request.top_via
    retry: Request = (
        request.with_header("via", str(via.with_param("branch", branch)))
        .with_header("cseq", f"{seq} {request.method}")
        .with_header(
            "authorization" if response.status == 401 else "proxy-authorization", value
        )
    )
    return retry, challenge.realm
