"""How the harness reaches a target: its URL's parts, TLS, and the scenario's extra headers.

A replica URL is ``http[s]://host[:port][/prefix]``; every request path is the prefix followed by
the protocol's route (``/prefix/generate_stream``), except that a prefix ending in ``/v1`` is not
doubled for the OpenAI routes (``https://api.example.com/v1`` as an OpenAI client's base URL).

Header values may name environment variables (``Bearer ${HF_TOKEN}``): they are expanded here,
once per process, into :class:`~harness.secrets.Secret` values; only the request bytes and
:meth:`Access.redact` ever see them, so a token never reaches a log, a record or an error text.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from harness.errors import InputError
from harness.secrets import Secret

SCHEMES = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Where:
    """One replica URL taken apart."""

    url: str          # as given, without a trailing slash (the replica's name in records)
    scheme: str       # http | https
    host: str
    port: int
    prefix: str       # path prefix, "" or "/something" (no trailing slash)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port == SCHEMES[self.scheme] else f"{h}:{self.port}"

    def path(self, route: str) -> str:
        """The request path of ``route`` (``/v1/completions``) under this URL's prefix."""
        if route.startswith("/v1/") and self.prefix.endswith("/v1"):
            return self.prefix + route[3:]
        return self.prefix + route


def parse_url(url: str) -> Where:
    """``url`` taken apart; ValueError (its message names the URL) when it cannot be a replica URL."""
    u = urlsplit(url.strip())
    if u.scheme not in SCHEMES:
        raise ValueError(f"a replica URL starts with http:// or https:// (got {url!r})")
    if not u.hostname:
        raise ValueError(f"no host in replica URL {url!r}")
    if u.query or u.fragment or u.username or u.password:
        raise ValueError(f"a replica URL has no query, fragment or credentials (got {_safe(url)!r}); "
                         f"put credentials in target.headers")
    try:
        port = u.port or SCHEMES[u.scheme]
    except ValueError:
        raise ValueError(f"bad port in replica URL {url!r}") from None
    return Where(url.strip().rstrip("/"), u.scheme, u.hostname, port, u.path.rstrip("/"))


def _safe(url: str) -> str:
    """The URL without its user:password part (never echo credentials)."""
    u = urlsplit(url)
    if u.username or u.password:
        return url.replace(u.netloc, u.hostname or "", 1)
    return url


class Access:
    """TLS settings and extra headers for every request to a target (one per generator process).

    Build it with :meth:`from_target`; it never shows the header values it holds."""

    def __init__(self, headers: dict[str, Secret] | None = None, ca_file: str | None = None,
                 verify: bool = True):
        self.headers = dict(headers or {})
        self.ca_file = ca_file
        self.verify = verify

    def __repr__(self) -> str:
        return f"Access(headers={sorted(self.headers)}, ca_file={self.ca_file!r}, verify={self.verify})"

    @classmethod
    def from_target(cls, target, environ=None) -> "Access":
        """From a scenario's ``target``: ``${NAME}`` in header values read from ``environ``
        (default ``os.environ``); InputError naming the header when a variable is not set."""
        from harness.scenario.models import header_env_refs

        env = os.environ if environ is None else environ
        out: dict[str, Secret] = {}
        for name, value in (getattr(target, "headers", None) or {}).items():
            text = value
            for ref in header_env_refs(value):
                if not env.get(ref):
                    raise InputError(f"header {name!r} needs the environment variable {ref}, which is not set",
                                     field=f"target.headers.{name}")
                text = text.replace("${" + ref + "}", env[ref])
            out[name] = Secret(text)
        tls = getattr(target, "tls", None)
        ca = tls.ca_file if tls is not None else None
        if ca is not None and not os.path.isfile(ca):
            raise InputError(f"CA file {ca} does not exist", field="target.tls.ca_file")
        return cls(out, ca, tls.verify if tls is not None else True)

    # -- TLS ------------------------------------------------------------------------------------
    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """The client context: system CAs (or ``ca_file``), hostname checked, unless verify is off."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise InputError(f"cannot read CA file {self.ca_file}: {e}", field="target.tls.ca_file") from None
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    # -- headers --------------------------------------------------------------------------------
    def header_lines(self) -> bytes:
        """``Name: value\\r\\n`` for every extra header (secret bytes: never log them)."""
        return b"".join(f"{k}: ".encode("latin-1") + v.reveal().encode("latin-1") + b"\r\n"
                        for k, v in self.headers.items())

    def header_dict(self) -> dict[str, str]:
        """The extra headers revealed, for an HTTP client's request (probes, health checks)."""
        return {k: v.reveal() for k, v in self.headers.items()}

    def redact(self, text: str) -> str:
        """``text`` with every header value (and each word of it, e.g. the token after
        ``Bearer``) replaced by ``***``."""
        for v in self.headers.values():
            s = v.reveal()
            if s and s in text:
                text = text.replace(s, "***")
            for part in s.split():
                if len(part) >= 8 and part in text:
                    text = text.replace(part, "***")
        return text

    # -- small requests (probes, health checks) -------------------------------------------------
    def get(self, url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """``GET url`` with the extra headers and TLS settings: (status, body up to 1 MiB);
        OSError (its text redacted) when no answer came."""
        import urllib.error
        import urllib.request

        req = urllib.request.Request(url, headers={**self.header_dict(), "Accept": "application/json"})
        handlers = [urllib.request.ProxyHandler({})]   # straight to the server, as the load goes
        if url.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        try:
            with urllib.request.build_opener(*handlers).open(req, timeout=timeout_s) as r:
                return r.status, r.read(1 << 20)
        except urllib.error.HTTPError as e:
            try:
                body = e.read(1 << 20)
            except OSError:
                body = b""
            return e.code, body
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise OSError(self.redact(f"{url}: {reason}")) from None
