"""Digest authentication of the B2BUA's calls (RFC 3261 section 22, RFC 7616).

Outbound: a trunk's 401/407 is answered with its credentials (INVITE, BYE, relayed
requests, probes, REGISTER), and later requests to it carry them at once. Inbound: an
INVITE from an address that matches no trunk is challenged; a trunk's credentials make the
call that trunk's; addresses that fail too often are ignored for a while.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from gateway.config import Trunk
from gateway.sip.auth import (
    AuthError,
    AuthResult,
    Credentials,
    DigestClient,
    DigestServer,
    FailureTracker,
    choose_challenge,
)
from gateway.sip.message import Request, Response, make_resend
from gateway.sip.transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA, Pending

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
    key = "authorization" if response.status == 401 else "proxy-authorization"
    retry = make_resend(request, seq, branch, ((key, value),))
    return retry, challenge.realm


class TrunkAuth:
    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua
        config = b2bua.config
        sip = config.sip
        # who may authenticate when the source address matches no trunk: trunks with
        # credentials (the call becomes that trunk's) and [sip] users
        self.credentials: dict[str, tuple[str, str | None]] = {
            name: (password, None) for name, password in sip.users.items()
        }
        self.credentials.update(
            {t.username: (t.password, t.name) for t in config.trunks if t.username}
        )
        self.digest = DigestServer(
            sip.domain, os.urandom(32), algorithms=sip.auth_algorithms
        )
        self.failures = FailureTracker(
            sip.auth_fail_limit, sip.auth_fail_window, sip.auth_block
        )
        # trunk -> (realm, header) of its last challenge: later requests to it carry
        # credentials at once, reusing the nonce with the next nc (RFC 7616 section 3.4)
        self.preauth: dict[str, tuple[str, str]] = {}
        self.clients: dict[str, DigestClient] = {
            t.name: DigestClient(Credentials(t.username, t.password))
            for t in config.trunks
            if t.username
        }

    def authenticate(self, txn: ServerTransaction, now: float) -> Trunk | None:
        """Digest-authenticate an INVITE from an address that matches no trunk.

        Returns the trunk whose credentials it carried; otherwise the request has been
        answered (401 challenge, 403) and None is returned. A [sip] user's credentials
        make the call that user's (gateway.calls.registrar.Registrar.caller_trunk).
        """
        gw = self.b2bua
        source = txn.source.host
        req = txn.request
        if not self.credentials:
            log.info("INVITE from %s:%s matches no trunk: 403", source, txn.source.port)
            gw._reject(txn, 403)
            return None
        result, username = self.digest.verify(
            req.method, req.get("authorization"),
            lambda name: self.credentials.get(name, (None, None))[0],
            now, req.body,
        )
        if result in (AuthResult.MISSING, AuthResult.STALE):
            headers = [("WWW-Authenticate", value) for value in
                       self.digest.challenge_headers(now, stale=result is AuthResult.STALE)]
            gw._respond(txn, 401, headers=headers)
            return None
        if result is AuthResult.OK and username is not None:
            self.failures.record_success(source)
            trunk_name = self.credentials[username][1]
            if trunk_name is not None:
                return gw.trunks[trunk_name]
            return gw.registrar.caller_trunk(username, txn.source)  # a [sip] user calling
        if self.failures.record_failure(source, now):
            log.warning("%s: %d failed authentications, ignored for %ss", source,
                        gw.config.sip.auth_fail_limit, gw.config.sip.auth_block)
        log.info("INVITE from %s: authentication %s: 403", source, result.name.lower())
        gw._reject(txn, 403)
        return None

    def retry(self, txn: ClientTransaction, resp: Response, owner: Pending) -> bool:
        """Answer a trunk's 401/407 with its credentials (RFC 3261 section 22.2).

        The request is sent again with the next CSeq and a new branch. A second challenge
        is answered only when it says ``stale=true`` (a new nonce, same credentials).
        """
        gw = self.b2bua
        call = owner.call
        if owner.purpose != "bye" and call is not None and (call.cancelled or call.ended):
            return False  # a BYE is still answered: the call is ending because of it
        name = owner.trunk.name if owner.trunk is not None else (
            owner.leg.trunk if owner.leg is not None else None)
        client = self.clients.get(name) if name else None
        if client is None or name is None:
            return False
        req = txn.request
        if owner.leg is not None:
            seq = max(owner.leg.local_cseq, req.cseq.seq) + 1
        elif owner.purpose == "register" and owner.trunk is not None:
            registration = gw.registrations.by_trunk[owner.trunk.name]
            registration.cseq = seq = max(registration.cseq, req.cseq.seq) + 1
        else:
            seq = req.cseq.seq + 1
        answer = authorized_retry(req, resp, client, seq=seq, branch=gw.stack.new_branch(),
                                  tries=owner.auth, who=f"trunk {name}")
        if answer is None:
            self.preauth.pop(name, None)
            return False
        retry, realm = answer
        key = "authorization" if resp.status == 401 else "proxy-authorization"
        self.preauth[name] = (realm, key)
        if owner.leg is not None:
            owner.leg.local_cseq = seq
        gw.resend(txn, owner, retry)
        return True

    def preauthorize(self, request: Request, trunk: str) -> Request:
        """Add the trunk's credentials if it challenged before (nonce reuse with nc)."""
        known = self.preauth.get(trunk)
        client = self.clients.get(trunk)
        if known is None or client is None:
            return request
        realm, key = known
        value = client.preemptive(realm, request.method, request.uri_text, request.body)
        if value is None:
            return request
        with_auth: Request = request.with_header(key, value)
        return with_auth

