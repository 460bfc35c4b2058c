"""The rate-limit settings, the policies they make, and who a request is charged to.

RATE_LIMIT_DEFAULT, RATE_LIMIT_UPLOAD, RATE_LIMIT_AUTH and RATE_LIMIT_USERNAME are each one limit
in the ``limits`` notation (``600/minute``, ``10/15 minutes``); TRUSTED_PROXIES is a list of
CIDRs. A bad value stops start-up with one line naming the variable.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from functools import cached_property

import falcon
from limits import RateLimitItem, parse_many
from marshmallow import ValidationError

from lumen import SettingsSchema, positive_int, positive_number, text

LIMIT_RULE = "must be one limit such as 600/minute: a count of at least 1, '/', and a period"
_KEYS_KEPT = 4096
IPV6_PREFIX = 64  # one IPv6 host usually owns a whole /64: charge the /64, not each address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_limit(value: str) -> RateLimitItem:
    """The one limit ``value`` spells; ValueError naming the rule otherwise."""
    try:
        items = parse_many(value.strip())
    except ValueError:
        raise ValueError(LIMIT_RULE) from None
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(LIMIT_RULE)
    return items[0]


def _valid_limit(value: str) -> None:
    try:
        parse_limit(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def parse_networks(value: str | None) -> tuple[Network, ...]:
    """The CIDRs of a comma-separated list (a bare address is a /32 or /128)."""
    networks = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an address or a CIDR such as 10.0.0.0/8") from None
    return tuple(networks)


def _valid_networks(value: str) -> None:
    try:
        parse_networks(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class RateLimitSettings(SettingsSchema):
    default = text("RATE_LIMIT_DEFAULT", "600/minute", validate=_valid_limit)
    upload = text("RATE_LIMIT_UPLOAD", "120/hour", validate=_valid_limit)
    auth = text("RATE_LIMIT_AUTH", "20/minute", validate=_valid_limit)
    username = text("RATE_LIMIT_USERNAME", "50/hour", validate=_valid_limit)
    failure_cost = positive_int("RATE_LIMIT_FAILURE_COST", 5)
    known_address_days = positive_int("RATE_LIMIT_KNOWN_ADDRESS_DAYS", 30)
    trusted_proxies = text("TRUSTED_PROXIES", validate=_valid_networks)
    key_prefix = text("RATE_LIMIT_KEY_PREFIX", "lumen:ratelimit")
    redis_retry_s = positive_number("RATE_LIMIT_REDIS_RETRY_S", 5.0)
    batch = positive_int("RATE_LIMIT_BATCH", 10)


@dataclass(frozen=True)
class Policy:
    """A named limit: what the RateLimit-Policy field advertises and the counters are kept by."""

    name: str
    variable: str
    item: RateLimitItem
    # Requests a worker may admit on its own between round trips to Redis (limiter.Batches);
    # 1: every request is checked there.
    batch: int = 1

    # Read on every request: worked out once.
    @cached_property
    def quota(self) -> int:
        return self.item.amount

    @cached_property
    def window(self) -> int:
        return self.item.get_expiry()

    @cached_property
    def field(self) -> str:
        """This policy as an item of RateLimit-Policy (draft-ietf-httpapi-ratelimit-headers)."""
        return f'"{self.name}";q={self.quota};w={self.window}'


# A batch is at most this share of its quota: a worker's unrecorded requests stay a small part
# of any caller's budget, and a quota under 2 x this many is checked on every request.
BATCH_QUOTA_SHARE = 50


def batch_of(quota: int, batch: int) -> int:
    return max(1, min(batch, quota // BATCH_QUOTA_SHARE))


def policies(section) -> dict[str, Policy]:
    """The four policies from the loaded settings, by name. Only the default policy is
    batched: uploads, logins and sign-ups cost far more than a round trip, and their limits
    guard against guessing and abuse, so each of them is checked in Redis."""
    variables = {
        "default": "RATE_LIMIT_DEFAULT",
        "upload": "RATE_LIMIT_UPLOAD",
        "auth": "RATE_LIMIT_AUTH",
        "username": "RATE_LIMIT_USERNAME",
    }
    found = {
        name: Policy(name, variable, parse_limit(section[name]))
        for name, variable in variables.items()
    }
    default = found["default"]
    found["default"] = replace(default, batch=batch_of(default.quota, section["batch"]))
    return found


# ---------------------------------------------------------------------------
# Who a request comes from
# ---------------------------------------------------------------------------


def _address(raw: str | None) -> Address | None:
    if not raw:
        return None
    raw = raw.strip().strip('"')
    if raw.startswith("["):  # Forwarded: for="[2001:db8::1]:4711"
        raw = raw[1:].partition("]")[0]
    elif raw.count(":") == 1:  # an IPv4 address with a port
        raw = raw.partition(":")[0]
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:192.0.2.1 is 192.0.2.1
    return mapped or address


class ClientAddress:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
    untrusted hop of Forwarded (or, without it, X-Forwarded-For), read from the right, since
    only the entries our own proxies appended can be believed."""

    def __init__(self, trusted: tuple[Network, ...]):
        self.trusted = trusted
        # The same peers and proxy chains come again and again: each is parsed once.
        self._keys: dict[tuple, str] = {}

    def key_of(self, req: falcon.Request) -> str:
        """The counter key of the request's client address (see ``address_key``)."""
        # Read from the WSGI environ: falcon's get_header raises and catches a KeyError for a
        # header that is absent, as Forwarded is from most requests.
        env = req.env
        seen = (req.remote_addr, env.get("HTTP_FORWARDED"), env.get("HTTP_X_FORWARDED_FOR"))
        key = self._keys.get(seen)
        if key is None:
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            key = self._keys[seen] = address_key(self.of(req))
        return key

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def of(self, req: falcon.Request) -> Address | None:
        peer = _address(req.remote_addr)
        if peer is None or not self.trusted or not self._is_trusted(peer):
            return peer
        hops = self._hops(req)
        client = peer
        for raw in reversed(hops):
            hop = _address(raw)
            if hop is None:  # a hop we cannot read: the last one we trust stands
                break
            client = hop
            if not self._is_trusted(hop):
                break
        return client

    @staticmethod
    def _hops(req: falcon.Request) -> list[str]:
        forwarded = req.get_header("Forwarded")
        if forwarded:
            return [element.src or "" for element in req.forwarded or ()]
        header = req.get_header("X-Forwarded-For")
        return [hop for hop in header.split(",")] if header else []


def address_key(address: Address | None) -> str:
    """The counter key of an address: IPv4 as it is, IPv6 by its /64."""
    if address is None:
        return "addr:unknown"
    if address.version == 6:
        return f"addr:{ipaddress.ip_network(f'{address}/{IPV6_PREFIX}', strict=False)}"
    return f"addr:{address}"
