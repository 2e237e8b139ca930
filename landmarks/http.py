"""HTTP as the internet serves it: slow, flaky, rate-limited and sometimes hostile.

The plumbing under both downloaders (landmarks.download: many images; landmarks.fetch: one big
file): one pooled `Client` that names us with a User-Agent, every urllib3 error mapped to a
FetchError with a short reason and whether retrying may help, status checks, Retry-After
parsing, exponential backoff with jitter, a body reader, and the ONE retry loop (`retry`) that
both use, which can bound the whole of a download with a `Deadline`.

The client speaks urllib3 directly rather than through requests: per image, requests' own
Python (cookies, hooks, proxy and auth lookups, header merging) cost more CPU than the whole
exchange does in urllib3 (0.55 against 0.22 ms here), and the downloader is CPU-bound.
"""
from __future__ import annotations

import email.utils
import math
import os
import random
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import certifi
import urllib3

DEFAULT_USER_AGENT = "landmarks-pipeline/0.1 (https://github.com/landmarks-ml/landmarks) python-urllib3"
MAX_REDIRECTS = 5
MAX_BACKOFF = 60.0  # seconds: cap on any single wait, Retry-After included
READ_CHUNK = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

T = TypeVar("T")
Response = urllib3.BaseHTTPResponse


class FetchError(Exception):
    """A failed fetch: `reason` is the short tag written to the failures CSV."""

    def __init__(self, reason: str, detail: str = "", *, retryable: bool = False, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


class Deadline:
    """A point on the monotonic clock by which a download must be over, retries and waits included.

    It caps each request's connect and read timeouts (`timeouts`), the body reader (`iter_body`)
    and the waits of `retry`. One wait it cannot shorten: http.client reads the status line and
    headers with the request's read timeout per read, so a server dripping its *headers* a byte
    at a time could outlast it (bodies are where slow servers were seen).
    """

    __slots__ = ("seconds", "end")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def timeouts(self, connect: float, read: float) -> tuple[float, float]:
        """(connect, read) timeouts for one request, neither longer than the time left."""
        left = self.left()
        if left <= 0:
            raise self.passed()
        return min(connect, left), min(read, left)

    def passed(self, detail: str = "") -> FetchError:
        """The error of a download that ran out of time (not retryable: the time is gone)."""
        return FetchError("timeout", f"deadline of {self.seconds:g} s passed{detail}")


class Client:
    """One pooled HTTP client for all the threads of a process: a connection pool per host as large
    as the number of threads, so each keeps its keep-alive connection instead of reconnecting.

    It does what a browser-like client must and nothing more: a User-Agent on every request, the
    proxies of the environment (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY, read once), CA certificates
    from REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE if set, else certifi's, as requests would. It
    neither retries nor follows redirects: `retry` and the callers do, so that every hop is checked.
    Connections cannot be shared across processes: make one per process.
    """

    def __init__(self, user_agent: str = DEFAULT_USER_AGENT, pool_size: int = 32) -> None:
        self.pool_size = max(pool_size, 10)
        self.headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate", "Accept": "*/*"}
        self._options = {"num_pools": 16, "maxsize": self.pool_size, "retries": False, "ca_certs":
                         os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()}
        self._direct = urllib3.PoolManager(**self._options)
        self._proxies = {k: v for k, v in urllib.request.getproxies_environment().items() if k != "no"}
        self._via: dict[str, urllib3.ProxyManager] = {}

    def proxy_for(self, url: str) -> str | None:
        """The proxy the environment names for `url`, or None to connect directly."""
        if not self._proxies:
            return None
        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme.lower()) or self._proxies.get("all")
        if proxy is None or urllib.request.proxy_bypass_environment(parts.netloc):
            return None
        return proxy

    def get(self, url: str, *, timeout: tuple[float, float], headers: dict[str, str] | None = None) -> Response:
        """Send GET `url` and return the response with its body still to be read (`iter_body`);
        close it with `release`. Raises urllib3's errors (see `request_error`)."""
        proxy = self.proxy_for(url)
        if proxy is None:
            manager: urllib3.PoolManager = self._direct
        else:
            manager = self._via.get(proxy) or self._via.setdefault(proxy, _proxy_manager(proxy, self._options))
        return manager.request("GET", url, headers={**self.headers, **headers} if headers else self.headers,
                               preload_content=False, redirect=False, retries=False,
                               timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]))


def _proxy_manager(proxy: str, options: dict) -> urllib3.ProxyManager:
    """A pool through `proxy`, authenticating with the user and password in its URL if it has them
    (as requests does: urllib3 alone would send none)."""
    parts = urlsplit(proxy)
    headers = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers = urllib3.make_headers(proxy_basic_auth=credentials)
    return urllib3.ProxyManager(proxy, proxy_headers=headers, **options)


def release(resp: Response) -> None:
    """Done with `resp`: a connection whose body was read to the end went back to its pool by
    itself; one with bytes left unread is closed, as they would be taken for the next response."""
    resp.close()
    resp.release_conn()


# ---------------------------------------------------------------------------------------------
# Errors and statuses


def request_error(exc: Exception) -> FetchError:
    """Map a urllib3 (or socket) exception to a failure reason, and whether retrying may help."""
    errors = urllib3.exceptions
    if isinstance(exc, errors.NewConnectionError):  # a subclass of ConnectTimeoutError, but refused or unresolvable
        return FetchError("connection_error", str(exc), retryable=True)
    if isinstance(exc, (errors.TimeoutError, TimeoutError)):
        return FetchError("timeout", str(exc), retryable=True)
    if isinstance(exc, errors.SSLError):
        return FetchError("ssl_error", str(exc))
    if isinstance(exc, (errors.ProtocolError, errors.ProxyError, ConnectionError)):
        return FetchError("connection_error", str(exc), retryable=True)
    if isinstance(exc, ValueError):  # urllib3's LocationValueError is one: no host, a bad port or IPv6 literal
        return FetchError("invalid_url", str(exc))
    if isinstance(exc, errors.DecodeError):
        return FetchError("corrupt", str(exc))
    return FetchError("request_error", f"{type(exc).__name__}: {exc}")


REQUEST_ERRORS = (urllib3.exceptions.HTTPError, OSError, ValueError)


def check_status(resp: Response) -> None:
    """FetchError `http_<status>` unless 2xx; retryable for 429 and 5xx, with the server's Retry-After."""
    status = resp.status
    if status == 429 or 500 <= status <= 599:
        raise FetchError(f"http_{status}", retryable=True, retry_after=parse_retry_after(resp.headers.get("Retry-After")))
    if not 200 <= status <= 299:
        raise FetchError(f"http_{status}")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


# ---------------------------------------------------------------------------------------------
# Bodies and retries


def iter_body(resp: Response, deadline: Deadline | None = None, read_timeout: float = math.inf) -> Iterator[bytes]:
    """The body of a streamed response, chunk by chunk as the bytes arrive: read1 hands over
    whatever has come (iter_content would drop the bytes of a chunk cut short by the connection,
    and they are exactly what resuming needs). Errors become FetchErrors.

    With a `deadline`, a slow body is cut off when it passes: the time left is checked after
    every chunk (one monotonic clock read, no syscall), and once it is shorter than the socket's
    timeout for one read (`read_timeout`, as the request set it) that timeout is lowered to it,
    so that no read can wait past the deadline either: a body dripping a byte every few seconds
    cannot hold a worker.
    """
    try:
        while chunk := resp.read1(READ_CHUNK, decode_content=True):
            if deadline is not None:
                left = deadline.end - time.monotonic()
                if left <= 0:
                    raise deadline.passed(" while reading the body")
                if left < read_timeout:  # only near the deadline: settimeout is a syscall
                    read_timeout = left
                    sock = getattr(resp.connection, "sock", None)
                    if sock is not None:
                        sock.settimeout(left)
            yield chunk
    except REQUEST_ERRORS as e:
        raise request_error(e) from e


def backoff_delay(attempt: int, base: float, cap: float = MAX_BACKOFF, rng: random.Random | None = None) -> float:
    """Wait before retry number `attempt` (0-based): base * 2**attempt, capped, with jitter in [50%, 100%]
    so that many workers hit by the same outage do not retry in lock-step."""
    delay = min(cap, base * 2.0**attempt)
    return delay * (0.5 + 0.5 * (rng or random).random())


def retry(attempt: Callable[[], T], *, max_retries: int, backoff: float, max_backoff: float = MAX_BACKOFF,
          deadline: Deadline | None = None, progressed: Callable[[FetchError], bool] | None = None,
          on_retry: Callable[[FetchError, float], None] | None = None) -> T:
    """Call `attempt` until it returns, retrying retryable FetchErrors up to `max_retries` times in a row.

    The wait before retry n (0-based) is backoff_delay(n). A Retry-After from the server replaces
    it (the server knows when it will recover) but is capped at `max_backoff`, so one server
    cannot stall a worker for hours.
    - deadline: bounds the whole, waits included (`attempt` bounds its own requests by it). A
      wait that would end past it is not begun: the call fails at once with reason `timeout`,
      the last error in its message;
    - progressed(error): asked after each failed attempt; True (it moved the work forward, e.g.
      bytes arrived) restarts the count, so a long transfer over a flaky link keeps going as
      long as it makes progress;
    - on_retry(error, delay): told before each wait (for a log line).
    """
    failures = 0
    while True:
        try:
            return attempt()
        except FetchError as e:
            if progressed is not None and progressed(e):
                failures = 0
            if not e.retryable or failures >= max_retries:
                raise
            delay = backoff_delay(failures, backoff, max_backoff) if e.retry_after is None else min(e.retry_after, max_backoff)
            if deadline is not None and delay >= deadline.left():
                raise deadline.passed(f"; last attempt: {e}") from e
            if on_retry is not None:
                on_retry(e, delay)
            time.sleep(delay)
            failures += 1


# ---------------------------------------------------------------------------------------------
# file:// URLs, the one other scheme both downloaders accept


def file_url_path(url: str) -> Path:
    """The local path of a file:// URL (only local hosts)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError("invalid_url", f"file URL on another host: {parts.netloc}")
    return Path(url2pathname(parts.path))
