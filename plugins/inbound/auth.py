"""Whether an inbound message may be believed: it passed DKIM/SPF-DMARC as our own MTA
checked it (its Authentication-Results, RFC 8601, from a trusted authserv-id), or dkimpy
verifies its signature here, or it came from a trusted peer. Unauthenticated mail is kept and
flagged but changes no consent and opens no request.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from email.message import Message

from .config import InboundConfig

log = logging.getLogger(__name__)

_RESULT = re.compile(r"\b(dkim|spf|dmarc)\s*=\s*([a-z]+)((?:\s+[a-z.\-]+\s*=\s*[^\s;]+)*)", re.I)
_PROP = re.compile(r"([a-z]+)\.([a-z\-]+)\s*=\s*([^\s;]+)", re.I)


def _aligned(domain: str, from_domain: str) -> bool:
    domain, from_domain = domain.lower().strip(".@"), from_domain.lower()
    return bool(domain) and (from_domain == domain or from_domain.endswith("." + domain)
                             or domain.endswith("." + from_domain))


def results_pass(header: str, trusted: list[str], from_domain: str) -> bool | None:
    """None: not from a trusted authserv-id. Else whether it says dmarc=pass, or dkim/spf
    pass for a domain aligned with the From domain."""
    authserv, _, rest = header.partition(";")
    authserv_id = authserv.strip().split()[0].lower() if authserv.strip() else ""
    if authserv_id not in {t.lower() for t in trusted}:
        return None
    for method, result, props in _RESULT.findall(rest):
        if result.lower() != "pass":
            continue
        method = method.lower()
        if method == "dmarc":
            return True
        values = {f"{p}.{k}".lower(): v.strip('"') for p, k, v in _PROP.findall(props)}
        domain = (values.get("header.d") or values.get("header.i", "").rpartition("@")[2]
                  if method == "dkim" else values.get("smtp.mailfrom", "").rpartition("@")[2])
        if _aligned(domain, from_domain):
            return True
    return False


def authenticated(raw: bytes, msg: Message, from_address: str, peer: str,
                  config: InboundConfig) -> tuple[bool, str]:
    """(believed, why)."""
    host = peer.rsplit(":", 1)[0].strip("[]") if peer else ""
    if host and host in config.trusted_peers:
        return True, f"delivered by trusted peer {host}"
    from_domain = from_address.rpartition("@")[2]
    # the MTA prepends its own header; the first one from a trusted id is the one to believe
    for header in msg.get_all("Authentication-Results") or []:
        verdict = results_pass(re.sub(r"\([^()]*\)", " ", " ".join(str(header).split())), config.trusted_authserv_ids, from_domain)
        if verdict is not None:
            return verdict, "Authentication-Results " + ("pass" if verdict else "did not pass")
    if config.verify_dkim and msg.get("DKIM-Signature"):
        import dkim  # dkimpy

        try:
            ok = dkim.verify(raw, dnsfunc=txt_lookup(config.dns_server, config.dns_timeout))
        except Exception as exc:  # noqa: BLE001 - a broken signature is a failed one
            log.info("DKIM verification error: %s", exc)
            ok = False
        signer = re.search(rb"\bd=([^;\s]+)", msg.get("DKIM-Signature", "").encode())
        if ok and signer and _aligned(signer.group(1).decode(), from_domain):
            return True, "DKIM signature verified"
        return False, "DKIM signature did not verify" if not ok else "DKIM signer not aligned with From"
    return False, "no passing authentication from a trusted source"


def txt_lookup(server: str | None, timeout: float) -> Callable[..., bytes | None]:
    """dkimpy's ``dnsfunc``: the TXT record at ``name`` from ``server`` ("host:port"), else from
    the system's resolvers. A name with no TXT record is None (dkimpy then fails the signature)."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=server is None)
    if server is not None:
        host, _, port = server.rpartition(":")
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)

    def lookup(name: bytes | str, timeout: float = timeout) -> bytes | None:
        qname = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(qname, "TXT", lifetime=timeout, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers, dns.exception.Timeout):
            return None
        if answer.rrset is None:
            return None
        return b"".join(next(iter(answer.rrset)).strings)  # type: ignore[attr-defined]

    return lookup
