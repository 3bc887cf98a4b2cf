"""Untrusted `file_path` inputs: local-path confinement and bounded, SSRF-safe downloads.

The reference server opened any path and fetched any URL it was given. Here a local
path must resolve (symlinks followed) inside a configured directory, and a URL must be
http(s) without credentials whose host resolves only to addresses the policy allows.
Each redirect hop is checked again, and the connection goes to the exact addresses
that were checked (the resolver is pinned), so a DNS answer that changes between the
check and the connect (rebinding) cannot reach an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ftcn.errors import InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance-metadata endpoints: refused even when private networks are allowed.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# NAT64 well-known prefix: its addresses embed an IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_SUFFIX_RE = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
MAX_URL_LENGTH = 4096
_CHUNK = 1 << 16


class Refusal(InputError):
    """A request refused for a stated reason; maps to one 4xx JSON answer.

    `error` is a stable machine-readable code, `reason` a sentence for humans.
    """

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


@dataclass(frozen=True)
class FetchPolicy:
    """What `file_path` may point at; built from the `serve:` config section."""

    allowed_dirs: tuple[Path, ...] = ()
    allow_private_networks: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    max_redirects: int = 5
    max_download_bytes: int = 500 * 1024 * 1024
    download_timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    dns_timeout_s: float = 10.0
    download_dir: Path | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, serve_cfg: dict[str, Any]) -> FetchPolicy:
        """Parse the `serve:` section; invalid CIDRs raise ConfigError."""
        from ftcn.errors import ConfigError

        nets: list[IPNetwork] = []
        for text in serve_cfg.get("allowed_networks") or []:
            try:
                nets.append(ipaddress.ip_network(str(text), strict=False))
            except ValueError:
                raise ConfigError(f"serve.allowed_networks: {text!r} is not a CIDR network") from None
        dirs = tuple(Path(os.path.realpath(os.path.expanduser(str(d)))) for d in serve_cfg.get("allowed_dirs") or [])
        download_dir = serve_cfg.get("download_dir")
        return cls(
            allowed_dirs=dirs,
            allow_private_networks=bool(serve_cfg.get("allow_private_networks", False)),
            allowed_hosts=frozenset(str(h).lower().rstrip(".") for h in serve_cfg.get("allowed_hosts") or []),
            allowed_networks=tuple(nets),
            max_redirects=int(serve_cfg.get("max_redirects", 5)),
            max_download_bytes=int(serve_cfg.get("max_download_bytes", cls.max_download_bytes)),
            download_timeout_s=float(serve_cfg.get("download_timeout_s", 120)),
            connect_timeout_s=float(serve_cfg.get("connect_timeout_s", 10)),
            read_timeout_s=float(serve_cfg.get("read_timeout_s", 30)),
            download_dir=Path(download_dir) if download_dir else None,
        )


# ---------------------------------------------------------------- classification


def is_url(file_path: str) -> bool:
    """True when `file_path` names a scheme (`http:`, `file:`, ...), i.e. is not a plain path."""
    return _SCHEME_RE.match(file_path) is not None


# ---------------------------------------------------------------- local paths


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine_local_path(file_path: str, policy: FetchPolicy) -> Path:
    """The real path of `file_path` when it lies inside an allowed directory.

    Relative paths are taken relative to the first allowed directory. `..` components
    are refused outright; the rest is resolved with symlinks followed and must stay
    inside an allowed directory, checked before existence so nothing is revealed
    about files elsewhere.
    """
    if "\x00" in file_path:
        raise Refusal(400, "invalid_path", "file_path contains a NUL byte")
    if not policy.allowed_dirs:
        raise Refusal(403, "local_files_disabled", "local file paths are not allowed on this server (no serve.allowed_dirs)")
    raw = Path(os.path.expanduser(file_path)) if file_path.startswith("~") else Path(file_path)
    if ".." in raw.parts:
        raise Refusal(403, "path_traversal", "file_path must not contain '..' components")
    if not raw.is_absolute():
        raw = policy.allowed_dirs[0] / raw
    real = Path(os.path.realpath(raw))
    if not any(_inside(real, root) for root in policy.allowed_dirs):
        raise Refusal(403, "path_not_allowed", "file_path is outside the allowed directories")
    try:
        exists, is_file = real.exists(), real.is_file()
    except OSError:  # e.g. a name longer than the file system allows (ENAMETOOLONG)
        raise Refusal(400, "invalid_path", "file_path cannot be a file on this server") from None
    if not exists:
        raise Refusal(404, "not_found", "file_path does not exist")
    if not is_file:
        raise Refusal(400, "not_a_file", "file_path is not a regular file")
    return real


# ---------------------------------------------------------------- URLs and addresses


def check_url(text: str | URL) -> URL:
    """Parse and vet one URL (the request's or a redirect target's)."""
    try:
        url = text if isinstance(text, URL) else URL(text)
    except (ValueError, TypeError):
        raise Refusal(400, "invalid_url", "file_path is not a valid URL") from None
    if len(str(url)) > MAX_URL_LENGTH:
        raise Refusal(400, "invalid_url", f"URL longer than {MAX_URL_LENGTH} characters")
    if url.scheme not in ("http", "https"):
        raise Refusal(400, "unsupported_scheme", f"only http and https URLs are accepted, not {url.scheme!r}")
    if url.user is not None or url.password is not None:
        raise Refusal(400, "credentials_in_url", "URLs with embedded credentials are refused")
    if not url.host:
        raise Refusal(400, "invalid_url", "URL has no host")
    try:
        port = url.port
    except ValueError:
        raise Refusal(400, "invalid_url", "URL has an invalid port") from None
    if port is None or not 0 < port < 65536:
        raise Refusal(400, "invalid_url", "URL has an invalid port")
    return url


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses that an IPv6 address routes to (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    out = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        out.extend(ip.teredo)
    if ip in _NAT64:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _is_public(ip: IPAddress) -> bool:
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    return all(_is_public(inner) for inner in _embedded_ipv4(ip))


def address_allowed(ip: IPAddress, host: str, policy: FetchPolicy) -> bool:
    """Policy for one resolved address of `host`."""
    targets = [ip, *_embedded_ipv4(ip)]
    if any(net.version == t.version and t in net for t in targets for net in policy.allowed_networks):
        return True
    if any(t in METADATA_ADDRESSES for t in targets):
        return False
    if _is_public(ip):
        return True
    return policy.allow_private_networks or host.lower().rstrip(".") in policy.allowed_hosts


async def resolve_checked(host: str, port: int, policy: FetchPolicy) -> list[tuple[int, str]]:
    """Resolve `host` once; every address must pass the policy. Returns (family, ip) pairs.

    One refused address refuses the host: a client could otherwise be steered to
    it by address ordering.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
            policy.dns_timeout_s,
        )
    except (OSError, UnicodeError):
        raise Refusal(400, "dns_failed", f"cannot resolve host {host!r}") from None
    except asyncio.TimeoutError:
        raise Refusal(400, "dns_failed", f"resolving host {host!r} timed out") from None
    out: list[tuple[int, str]] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        addr = str(sockaddr[0]).split("%", 1)[0]
        ip = ipaddress.ip_address(addr)
        if not address_allowed(ip, host, policy):
            raise Refusal(
                403,
                "address_not_allowed",
                f"host {host!r} resolves to {ip}, a private, loopback, link-local, reserved or "
                "metadata address that this server does not fetch from",
            )
        if (family, addr) not in out:
            out.append((family, addr))
    if not out:
        raise Refusal(400, "dns_failed", f"host {host!r} has no IP address")
    return out


class PinnedResolver(AbstractResolver):
    """aiohttp resolver that only knows the addresses checked by `resolve_checked`."""

    def __init__(self) -> None:
        self._pins: dict[str, list[tuple[int, str]]] = {}

    def pin(self, host: str, addresses: Iterable[tuple[int, str]]) -> None:
        self._pins[host.lower()] = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addrs = self._pins.get(host.lower())
        if not addrs:
            raise OSError(f"host {host!r} was not checked")
        return [
            ResolveResult(hostname=host, host=ip, port=port, family=fam, proto=socket.IPPROTO_TCP, flags=0)
            for fam, ip in addrs
            if family in (socket.AF_UNSPEC, fam)
        ]

    async def close(self) -> None:
        self._pins.clear()


# ---------------------------------------------------------------- download


@dataclass
class Download:
    """A finished download: where it is and how it got there."""

    path: Path
    url: str
    final_url: str
    size: int
    redirects: int


def _suffix(url: URL) -> str:
    suffix = Path(url.path).suffix
    return suffix.lower() if _SUFFIX_RE.match(suffix) else ".bin"


async def _stream_to(resp: aiohttp.ClientResponse, dest: Path, limit: int) -> int:
    if resp.content_length is not None and resp.content_length > limit:
        raise Refusal(413, "download_too_large", f"remote file is {resp.content_length} bytes, the limit is {limit}")
    size = 0
    with open(dest, "wb") as fh:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise Refusal(413, "download_too_large", f"remote file exceeds the limit of {limit} bytes")
            fh.write(chunk)
    return size


async def _fetch(url: URL, dest_dir: Path, policy: FetchPolicy) -> Download:
    resolver = PinnedResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True, limit=1)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=policy.connect_timeout_s, sock_read=policy.read_timeout_s
    )
    headers = {"Accept-Encoding": "identity", "User-Agent": "ftcn-stream", **policy.extra_headers}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trust_env=False, auto_decompress=False, headers=headers
    ) as session:
        current = url
        for hop in range(policy.max_redirects + 1):
            current = check_url(current)
            resolver.pin(current.host, await resolve_checked(current.host, current.port, policy))
            try:
                async with session.get(current, allow_redirects=False) as resp:
                    if resp.status in _REDIRECT_STATUSES:
                        location = resp.headers.get("Location")
                        if not location:
                            raise Refusal(400, "download_failed", f"HTTP {resp.status} redirect without a Location")
                        try:
                            current = current.join(URL(location))
                        except ValueError:
                            raise Refusal(400, "invalid_url", "redirect Location is not a valid URL") from None
                        continue
                    if resp.status != 200:
                        raise Refusal(400, "download_failed", f"the remote server answered HTTP {resp.status}")
                    dest = dest_dir / f"download{_suffix(current)}"
                    size = await _stream_to(resp, dest, policy.max_download_bytes)
                    return Download(dest, str(url), str(current), size, hop)
            except aiohttp.ServerTimeoutError:
                raise Refusal(408, "download_timeout", "the remote server stopped answering") from None
            except aiohttp.ClientError as exc:
                raise Refusal(400, "download_failed", f"download failed: {type(exc).__name__}") from None
        raise Refusal(400, "too_many_redirects", f"more than {policy.max_redirects} redirects")


async def download(url: str | URL, dest_dir: Path, policy: FetchPolicy) -> Download:
    """Fetch `url` into `dest_dir` under the policy; every failure is a `Refusal`.

    The caller owns `dest_dir` and deletes it (the partial file included) afterwards.
    """
    checked = check_url(url)
    try:
        return await asyncio.wait_for(_fetch(checked, dest_dir, policy), policy.download_timeout_s)
    except asyncio.TimeoutError:
        raise Refusal(408, "download_timeout", f"download did not finish within {policy.download_timeout_s:g} s") from None
