"""The nanoservice application: `create_app(config, identity) -> web.Application`, served by `InstanceRunner`.

The Application holds the state (typed keys) and the resources (cleanup
contexts); requests skip its router and middleware: aiohttp's low-level
server hands each one to `dispatch`, a lookup in a table of the few fixed
paths (a third of the CPU a leaf spent per request went to that machinery).
Views are thin: `serve` applies what every service request gets (budget and
hop checks, service time, injected errors, payload, metrics, spans) and the
package decides the answer.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from json.encoder import encode_basestring_ascii
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.hdrs import EXPECT, METH_HEAD, RETRY_AFTER
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion, HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDictProxy

from simiankube import contract
from simiankube.contract import Latency, NanoserviceConfig
from simiankube.nanoservice import keys
from simiankube.nanoservice.client import Caller, new_pool, new_session
from simiankube.nanoservice.hop import ANONYMOUS, HEADER_CALLER, BadHeader, Hop, incoming_hop
from simiankube.nanoservice.keys import Identity, Serving, Status
from simiankube.nanoservice.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from simiankube.nanoservice.metrics import Metrics
from simiankube.nanoservice.packages import Context, Reply, build_package
from simiankube.nanoservice.policy import draw_latency_ms
from simiankube.nanoservice.pool import Pool
from simiankube.nanoservice.probe import ProbeRequestError, Scope, parse_probe_request, probe_all
from simiankube.nanoservice.resolver import Resolver
from simiankube.nanoservice.tracing import (UNTRACED, SpanExporter, incoming_context, span_name, wall_time,
                                             zipkin_span)
from simiankube.nanoservice.traffic import generate, keep_warm

View = Callable[[web.Application, web.BaseRequest], Awaitable[web.StreamResponse]]

MAX_BODY_BYTES = 64 * 1024  # larger request bodies are answered 413; also what a forwarded value must fit in
MAX_KEY_LENGTH = 256
# A key travels in the URL path of every forwarded call: these would end the path or be decoded into another key.
KEY_FORBIDDEN = frozenset("?#%/\\") | frozenset(map(chr, [*range(32), 127]))
READ_TIMEOUT_SECONDS = 10.0  # headers and bodies must arrive within this (slow clients hold no connection forever)
PLATFORM_PATHS = frozenset({contract.PATH_HEALTH, contract.PATH_READY, contract.PATH_METRICS})  # not counted
# Requests that may wait (service time, calls out) admitted at once; more are shed with a fast 503 and a
# retry hint, so overload turns into quick answers the caller can retry elsewhere instead of a queue that
# makes every request time out (the answer costs a fraction of the work it saves).
MAX_IN_FLIGHT = 100
RETRY_AFTER_SECONDS = "1"
SHED_FIELDS = f"{RETRY_AFTER}: {RETRY_AFTER_SECONDS}\r\n"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"  # what web.json_response sends
REASONS = {status.value: status.phrase for status in HTTPStatus}  # as aiohttp's status lines
SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n"
SHED_ANSWER_FIELDS = f"Content-Type: {JSON_CONTENT_TYPE}\r\n{SHED_FIELDS}"  # as Answer(..., headers=SHED_FIELDS)


def encode_json(body: dict[str, Any]) -> bytes:
    """json.dumps(body).encode(), written by hand for flat objects of strings, booleans, integers and null
    (every answer of a leaf): json.dumps sets up a new C encoder per call, which costs more than this."""
    members = []
    for name, value in body.items():
        if type(name) is not str:
            return json.dumps(body).encode()
        if value is None or type(value) is bool:
            text = "null" if value is None else "true" if value else "false"
        elif type(value) is str:
            text = encode_basestring_ascii(value)
        elif type(value) is int:
            text = int.__repr__(value)
        else:  # nested values, floats
            return json.dumps(body).encode()
        members.append(f"{encode_basestring_ascii(name)}: {text}")
    return f"{{{', '.join(members)}}}".encode()


class Answer(web.StreamResponse):
    """A whole answer that writes itself in one transport write: the bytes aiohttp's `web.Response` would
    write (same headers in the same order, HEAD without the body, the same Connection header), without its
    header multidict, serializer and writer bookkeeping, which cost a leaf more per request than its own work.
    Only what aiohttp's server reads of a response is kept: status, keep_alive, prepare, write_eof."""

    def __init__(self, body: bytes, status: int = 200, content_type: str = JSON_CONTENT_TYPE,
                 headers: str = "") -> None:
        # StreamResponse.__init__ is skipped on purpose: it builds the header multidict this class does without.
        self._status = status
        self._content = body
        self._fields = f"Content-Type: {content_type}\r\n{headers}"  # `headers`: whole "Name: value\r\n" lines

    async def prepare(self, request: web.BaseRequest) -> None:
        keep_alive = self._keep_alive = request.keep_alive
        data = answer_bytes(self._status, self._fields, self._content, request.version, keep_alive,
                            request.method == METH_HEAD)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(data)
        self._body_length = len(data)
        self._eof_sent = True
        await request.writer.drain()  # as aiohttp's write_eof: wait while the peer does not read

    async def write_eof(self, data: bytes = b"") -> None:
        """Everything was written by `prepare`."""


def answer_bytes(status: int, fields: str, body: bytes, version: HttpVersion, keep_alive: bool, head: bool) -> bytes:
    """Status line, `fields` (whole header lines), Content-Length, Date, Server, Connection as aiohttp adds it
    (keep-alive of HTTP/1.0, close of HTTP/1.1), then the body unless the request was a HEAD."""
    connection = ("Connection: keep-alive\r\n" if keep_alive and version == HttpVersion10 else
                  "" if keep_alive or version != HttpVersion11 else "Connection: close\r\n")
    data = (f"HTTP/{version[0]}.{version[1]} {status} {REASONS.get(status, '')}\r\n{fields}Content-Length: "
            f"{len(body)}\r\nDate: {rfc822_formatted_time()}\r\n{SERVER_LINE}{connection}\r\n").encode()
    return data if head else data + body


def json_answer(body: dict[str, Any], status: int = 200) -> Answer:
    """What web.json_response(body, status=status) sends, built and written faster."""
    return Answer(encode_json(body), status)


def error(status: int, message: str, headers: str = "") -> Answer:
    return Answer(encode_json({"error": message}), status, headers=headers)


class BadRequest(Exception):
    """Bad input found by a view: answered `status` with `{"error": message}` (the message names the field)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def caller_label(headers: CIMultiDictProxy[str]) -> str:
    """The calling service for metrics edges; a header that is not printable ASCII (undecodable bytes would
    break every later scrape) counts as an outside caller."""
    caller = headers.get(HEADER_CALLER, ANONYMOUS)[:64]
    return caller if caller.isascii() and caller.isprintable() else ANONYMOUS


def answered(app: web.Application, request: web.BaseRequest, response: Answer, started: float) -> Answer:
    """Count an answer that did not go through `serve` (platform endpoints are not counted)."""
    serving = app.get(keys.SERVING)
    if serving is not None and request.path not in PLATFORM_PATHS:
        edge = serving.metrics.server(caller_label(request.headers))
        edge.requests += 1
        edge.observe(time.monotonic() - started)
        edge.answered(response.status)
    return response


def overloaded(limit: int) -> Answer:
    return Answer(overloaded_body(limit), 503, headers=SHED_FIELDS)


@functools.cache  # one limit per instance
def overloaded_body(limit: int) -> bytes:
    return encode_json({"error": f"overloaded: {limit} requests in flight, retry another instance"})


def at_limit(serving: Serving) -> bool:
    """Whether requests are shed now (all but the platform's): the in-flight limit is reached."""
    return serving.status.in_flight >= serving.max_in_flight and serving.may_wait


def count_shed(serving: Serving, headers: CIMultiDictProxy[str], started: float) -> None:
    """A request shed before any view saw it, counted as `serve` counts its answers."""
    serving.status.shed += 1
    edge = serving.metrics.server(caller_label(headers))
    edge.requests += 1
    edge.observe(time.monotonic() - started)
    edge.answered(503)


def shed_message(serving: Serving, message: object, payload: StreamReader) -> bytes | None:
    """The whole 503 of a request the connection handler may answer without building a request for it, while
    `at_limit`: keep-alive (nothing to close afterwards), not the platform's, no body still to come; else None."""
    if not (isinstance(message, RawRequestMessage) and not message.should_close and payload.is_eof()
            and message.url.path not in PLATFORM_PATHS):
        return None
    count_shed(serving, message.headers, time.monotonic())
    return answer_bytes(503, SHED_ANSWER_FIELDS, overloaded_body(serving.max_in_flight), message.version, True,
                        message.method == METH_HEAD)


async def serve(serving: Serving, request: web.BaseRequest, work: Callable[[Hop], Awaitable[Reply]]) -> Answer:
    """One service request, from budget check to metrics; `work` is the package's part."""
    config = serving.config
    caller = caller_label(request.headers)
    edge = serving.metrics.server(caller)
    edge.requests += 1
    started = time.monotonic()
    status = 500
    hop: Hop | None = None
    admitted = False
    try:
        if serving.may_wait:
            if at_limit(serving):  # filled while the body was read
                serving.status.shed += 1
                status = 503
                return overloaded(serving.max_in_flight)
            serving.status.in_flight += 1
            admitted = True
        trace = incoming_context(request.headers, serving.rng) if serving.traced else UNTRACED
        hop = incoming_hop(request.headers, trace, budget_ms=config.deadline_ms, max_hops=config.max_hops, now=started)
        if hop.hops > hop.max_hops:
            status = 508
            return error(508, f"hop limit exceeded: hop {hop.hops} of at most {hop.max_hops}")
        budget = hop.deadline - started
        if budget <= 0:
            status = 504
            return error(504, "deadline already passed on arrival")
        delay = draw_latency_ms(config.behavior.latency, serving.rng) if serving.service_time else 0.0
        # The service time, then an injected error or the package's reply (with the configured payload); written
        # out rather than in a coroutine of its own, which would cost a frame per request.
        if delay > 0 or serving.calls_out:
            try:
                async with asyncio.timeout(budget):
                    if delay > 0:
                        await asyncio.sleep(delay / 1000.0)
                    reply = _injected_error(serving) or _with_payload(serving, await work(hop))
            except TimeoutError:
                status = 504
                return error(504, f"budget of {budget * 1000:.1f} ms ran out in {config.service}")
        else:  # nothing below suspends, so a timer could never fire: none is armed
            reply = _injected_error(serving) or _with_payload(serving, await work(hop))
        status = reply.status
        return json_answer(reply.body, status)
    except BadHeader as err:
        status = 400
        return error(400, str(err))
    except Exception:  # a bug: answered and counted here, once
        logging.getLogger(__name__).exception("%s %s failed", request.method, request.path)
        return error(500, "internal error")
    finally:
        if admitted:
            serving.status.in_flight -= 1
        elapsed = time.monotonic() - started
        edge.observe(elapsed)
        edge.answered(status)
        if serving.exporting and hop is not None and hop.trace.sampled:
            identity = serving.identity
            serving.exporter.record(zipkin_span(
                hop.trace, name=span_name(request.method, request.path), kind="SERVER", service=config.service,
                address=identity.address, start=wall_time(started), duration=elapsed, remote=caller,
                tags={"http.status_code": str(status), "instance": identity.instance},
            ))


def _injected_error(serving: Serving) -> Reply | None:
    behavior = serving.config.behavior
    if behavior.error_rate and serving.rng.random() < behavior.error_rate:
        return Reply(500, {"error": f"injected error (error_rate {behavior.error_rate:g})"})
    return None


def _with_payload(serving: Serving, reply: Reply) -> Reply:
    if serving.payload:
        reply.body["payload"] = serving.payload
    return reply


def _key(request: web.BaseRequest) -> str:
    key = unquote_key(request.rel_url.path_safe[len(KV_PREFIX):])
    if len(key) > MAX_KEY_LENGTH:
        raise BadRequest(400, f"key: at most {MAX_KEY_LENGTH} characters")
    if not KEY_FORBIDDEN.isdisjoint(key):
        raise BadRequest(400, f"key: {key!r} has a character a forwarded path cannot carry (?#%/\\ or control)")
    return key


def unquote_key(segment: str) -> str:
    """A path segment as aiohttp's router hands a `{key}` to its view (only %2F and %25 are still quoted)."""
    return segment if "%" not in segment else segment.replace("%2F", "/").replace("%25", "%")


async def _body(app: web.Application, request: web.BaseRequest) -> bytes:
    """The body, within the read timeout (413 beyond MAX_BODY_BYTES: the request's client_max_size)."""
    try:
        async with asyncio.timeout(app[keys.READ_TIMEOUT]):
            return await request.read()
    except TimeoutError:
        raise BadRequest(408, f"body: not received within {app[keys.READ_TIMEOUT]:g} s") from None


async def _text(app: web.Application, request: web.BaseRequest) -> str:
    """The body decoded with the Content-Type's charset (UTF-8 by default); a wrong charset or byte is a 400."""
    raw = await _body(app, request)
    charset = request.charset or "utf-8"
    try:
        return raw.decode(charset)
    except LookupError:  # unknown, or not a text encoding (base64, rot13)
        raise BadRequest(400, f"Content-Type: unknown charset {charset[:64]!r}") from None
    except UnicodeDecodeError as err:
        raise BadRequest(400, f"body: not valid {charset}: byte {err.start}") from None
    except ValueError:  # other codecs' own errors (idna, ...)
        raise BadRequest(400, f"body: not valid {charset}") from None


async def _json(app: web.Application, request: web.BaseRequest) -> Any:
    text = await _text(app, request)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        raise BadRequest(400, "body: not valid JSON") from None


async def _json_object(app: web.Application, request: web.BaseRequest, required: dict[str, type]) -> dict[str, Any]:
    """The request body as a JSON object with the required typed fields, else 400 (413 when too big)."""
    data = await _json(app, request)
    problems = [] if isinstance(data, dict) else ["body: expected a JSON object"]
    for name, kind in required.items():
        if not problems and (not isinstance(data.get(name), kind) or isinstance(data.get(name), bool)):
            problems.append(f"{name}: expected {kind.__name__}, got {data.get(name)!r}"[:200])
    if problems:
        raise BadRequest(400, "; ".join(problems))
    return data  # type: ignore[no-any-return]


def _forwardable(key: str, value: str) -> str:
    """A value is stored only if every call that carries it (a forward, a replication) fits the body limit:
    JSON escapes can make it several times longer than it arrived."""
    if 12 * (len(key) + len(value)) + 32 > MAX_BODY_BYTES:  # else it fits: 12 bytes per character at most
        size = len(json.dumps({"key": key, "value": value}))
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, f"value: {size} bytes when forwarded as JSON, at most {MAX_BODY_BYTES}")
    return value


def _direct(request: web.BaseRequest) -> bool:
    return bool(request.query_string) and request.query.get("direct", "") in ("1", "true")


# -- views ------------------------------------------------------------------------


def get_key(app: web.Application, request: web.BaseRequest) -> Awaitable[Answer]:
    """Not a coroutine itself (one frame less per request): checks the key, then hands `serve`'s coroutine on."""
    key, serving = _key(request), app[keys.SERVING]
    return serve(serving, request, lambda hop: serving.package.get(hop, key, _direct(request)))


async def put_key(app: web.Application, request: web.BaseRequest) -> Answer:
    key = _key(request)
    if request.content_type == "application/json":
        value = str((await _json_object(app, request, {"value": str}))["value"])
    else:
        value = await _text(app, request)
    value = _forwardable(key, value)
    serving = app[keys.SERVING]
    return await serve(serving, request, lambda hop: serving.package.put(hop, key, value, _direct(request)))


async def replicate(app: web.Application, request: web.BaseRequest) -> Answer:
    data = await _json_object(app, request, {"key": str, "value": str})
    if len(data["key"]) > MAX_KEY_LENGTH:
        raise BadRequest(400, f"key: at most {MAX_KEY_LENGTH} characters")
    serving = app[keys.SERVING]
    spread = request.query.get("spread", "") in ("1", "true")
    return await serve(serving, request,
                       lambda hop: serving.package.replicate(hop, data["key"], data["value"], spread))


async def coins(app: web.Application, request: web.BaseRequest) -> Answer:
    data = await _json_object(app, request, {"coins": int})
    if data["coins"] < 1:
        raise BadRequest(400, f"coins: must be >= 1, got {data['coins']}")
    serving = app[keys.SERVING]
    return await serve(serving, request, lambda hop: serving.package.coins(hop, data["coins"]))


async def namedrop(app: web.Application, request: web.BaseRequest) -> Answer:
    data = await _json_object(app, request, {"instance": str})
    serving = app[keys.SERVING]
    return await serve(serving, request, lambda hop: serving.package.namedrop(hop, data["instance"][:256]))


async def registry(app: web.Application, request: web.BaseRequest) -> Answer:
    started = time.monotonic()
    return answered(app, request, json_answer(app[keys.SERVING].package.view()), started)


async def info(app: web.Application, request: web.BaseRequest) -> Answer:
    started, config, identity = time.monotonic(), app[keys.CONFIG], app[keys.IDENTITY]
    return answered(app, request, json_answer({
        "service": config.service, "package": config.package, "region": config.region,
        "instance": identity.instance, "zone": identity.zone}), started)


async def healthz(app: web.Application, request: web.BaseRequest) -> Answer:
    return json_answer({"status": "ok", "instance": app[keys.IDENTITY].instance})


async def readyz(app: web.Application, request: web.BaseRequest) -> Answer:
    status = app[keys.STATUS]
    if status.draining or not status.ready:
        return error(503, "draining" if status.draining else "starting")
    return json_answer({"status": "ready"})


async def metrics(app: web.Application, request: web.BaseRequest) -> Answer:
    return Answer(app[keys.METRICS].exposition(), content_type=METRICS_CONTENT_TYPE)


async def probe(app: web.Application, request: web.BaseRequest) -> Answer:
    started = time.monotonic()
    try:
        targets, timeout_ms = parse_probe_request(await _json(app, request), app[keys.PROBE_SCOPE])
    except ProbeRequestError as err:
        raise BadRequest(400, str(err)) from None
    results = await probe_all(app[keys.RESOLVER], targets, timeout_ms)
    return answered(app, request, json_answer({"results": results}), started)


# -- routing: a fixed table instead of aiohttp's router --------------------------------


def _get(view: View) -> dict[str, View]:
    return {"GET": view, "HEAD": view}  # as aiohttp's add_get: HEAD answers like GET, without the body


KV_PREFIX = "/kv/"
KV_ROUTES = {**_get(get_key), "PUT": put_key}  # /kv/{key}
KV_NOT_IN_KEY = frozenset("/{}")  # what aiohttp's `{key}` does not match (as matched, %2F still quoted)
ROUTES: dict[str, dict[str, View]] = {
    "/": _get(info), "/replicate": {"POST": replicate}, "/coins": {"POST": coins}, "/namedrop": {"POST": namedrop},
    "/registry": _get(registry), "/probe": {"POST": probe}, contract.PATH_HEALTH: _get(healthz),
    contract.PATH_READY: _get(readyz), contract.PATH_METRICS: _get(metrics),
}


def route(path: str) -> dict[str, View] | None:
    """The views of a path as aiohttp quotes it for routing (`rel_url.path_safe`), by method; None: no such path."""
    if path.startswith(KV_PREFIX):
        segment = path[len(KV_PREFIX):]
        return KV_ROUTES if segment and KV_NOT_IN_KEY.isdisjoint(segment) else None
    return ROUTES.get(path)


async def dispatch(app: web.Application, serving: Serving, request: web.BaseRequest) -> web.StreamResponse:
    """Route a request to its view. Every error is JSON `{"error"}` (404, 405, 413 of the body limit too) and
    counted, and a bug is a JSON 500 rather than a dropped connection. Answers that come back normally were
    counted by `serve` or `answered`. While the in-flight limit is reached, every request but the platform's
    is shed first, before any routing or parsing: the cheaper a 503, the more of the CPU goes to admitted work."""
    started = time.monotonic()
    if at_limit(serving) and request.path not in PLATFORM_PATHS:
        count_shed(serving, request.headers, started)
        return overloaded(serving.max_in_flight)
    try:
        views = route(request.rel_url.path_safe)
        if views is None:
            return answered(app, request, error(404, f"no such path: {request.path}"), started)
        view = views.get(request.method)
        if view is None:
            allowed = ",".join(sorted(views))
            response = error(405, f"method {request.method} not allowed on {request.path} (allowed: {allowed})",
                             f"Allow: {allowed}\r\n")
            return answered(app, request, response, started)
        if EXPECT in request.headers:
            await expect_continue(request)
        return await view(app, request)
    except BadRequest as err:
        response = error(err.status, err.message)
    except web.HTTPException as err:  # the body limit's 413 (aiohttp names the limit and the size)
        if err.status < 400:
            raise
        response = error(err.status, err.text or err.reason)
    except Exception:  # a bug: answered, logged, counted
        logging.getLogger(__name__).exception("%s %s failed", request.method, request.path)
        response = error(500, "internal error")
    return answered(app, request, response, started)


async def expect_continue(request: web.BaseRequest) -> None:
    """What aiohttp's router does for `Expect:` (curl sends it before bodies over 1 KiB): 100 Continue, else 417."""
    expect = request.headers[EXPECT]
    if request.version == HttpVersion11:
        if expect.lower() != "100-continue":
            raise BadRequest(417, f"Expect: unknown expectation {expect[:64]!r}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not part of the response's size


# -- resources: one cleanup context each --------------------------------------------


async def client_session(app: web.Application) -> AsyncIterator[None]:
    """The instance's client: its own keep-alive pool, or the one its process shares (local workers)."""
    shared = app.get(keys.POOL)
    pool = new_pool(app[keys.READ_TIMEOUT]) if shared is None else shared
    async with new_session() as session:
        app[keys.SESSION] = session
        config, identity = app[keys.CONFIG], app[keys.IDENTITY]
        caller = Caller(config=config, zone=identity.zone, address=identity.address, pool=pool,
                        resolver=app[keys.RESOLVER], metrics=app[keys.METRICS], exporter=app[keys.EXPORTER],
                        rng=app[keys.RNG])
        app[keys.CALLER] = caller
        package = build_package(Context(config, identity.instance, caller, app[keys.RNG]))
        exporter = app[keys.EXPORTER]
        service_time = has_service_time(config.behavior.latency)
        app[keys.SERVING] = Serving(
            config=config, identity=identity, rng=app[keys.RNG], metrics=app[keys.METRICS], exporter=exporter,
            package=package, payload="x" * config.behavior.payload_bytes,
            calls_out=package.calls_out, exporting=exporter.enabled, traced=exporter.enabled or package.calls_out,
            service_time=service_time, status=app[keys.STATUS], may_wait=package.calls_out or service_time,
            max_in_flight=app[keys.MAX_IN_FLIGHT],
        )
        try:
            yield
        finally:
            if shared is None:
                await pool.close()


async def resolver_refresh(app: web.Application) -> AsyncIterator[None]:
    """Resolve every configured name before serving, then poll for changes (DNS only)."""
    resolver, names = app[keys.RESOLVER], configured_names(app[keys.CONFIG])
    await resolver.refresh(names)
    task = None if resolver.table is not None else asyncio.create_task(resolver.refresh_forever(names))
    yield
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def span_exporter(app: web.Application) -> AsyncIterator[None]:
    exporter = app[keys.EXPORTER]
    if not exporter.enabled:
        yield
        return
    task = asyncio.create_task(exporter.run(app[keys.SESSION]))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await exporter.flush(app[keys.SESSION])


async def traffic_loop(app: web.Application) -> AsyncIterator[None]:
    """The traces this instance starts: its traffic (traffic sources, self-driven services) and the
    keep-warm calls to dependencies it has not called for a while."""
    config = app[keys.CONFIG]
    caller = app[keys.CALLER]
    tasks = [asyncio.create_task(keep_warm(caller, config))]
    if config.traffic is not None:
        tasks.append(asyncio.create_task(generate(caller, config, config.traffic)))
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def has_service_time(latency: Latency) -> bool:
    """Whether a draw can be above 0 (else the request path skips drawing)."""
    return latency.mean_ms > 0 and latency.max_ms > 0 or latency.distribution == "normal" and latency.stddev_ms > 0


def configured_names(config: NanoserviceConfig) -> list[tuple[str, int]]:
    names = {(p.host, config.port) for p in config.peers}
    for dep in config.dependencies:
        for t in dep.targets:
            names.add((t.peers_host, t.port))
            names.update((i.host, t.port) for i in t.instances)
    return sorted(names)


async def mark_ready(app: web.Application) -> None:
    app[keys.STATUS].ready = True


async def mark_draining(app: web.Application) -> None:
    app[keys.STATUS].draining = True


def create_app(
    config: NanoserviceConfig,
    identity: Identity,
    *,
    resolver: Resolver | None = None,
    exporter: SpanExporter | None = None,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    max_in_flight: int = MAX_IN_FLIGHT,
    pool: Pool | None = None,
) -> web.Application:
    """`pool`: a keep-alive pool shared with other instances of the process (closed by its owner)."""
    app = web.Application()
    if pool is not None:
        app[keys.POOL] = pool
    app[keys.READ_TIMEOUT] = read_timeout
    app[keys.CONFIG] = config
    app[keys.IDENTITY] = identity
    app[keys.RNG] = random.Random(identity.seed)
    app[keys.METRICS] = Metrics(config.service, config.package, config.callers)
    app[keys.RESOLVER] = resolver or Resolver()
    app[keys.EXPORTER] = exporter or SpanExporter()
    app[keys.METRICS].watch_spans(app[keys.EXPORTER].counts)
    status = app[keys.STATUS] = Status()
    app[keys.METRICS].watch_load(lambda: (status.in_flight, max_in_flight, status.shed))
    app[keys.PROBE_SCOPE] = Scope(frozenset(h for h, _ in configured_names(config)) | {t.host for d in
                                  config.dependencies for t in d.targets}, config.architecture, config.port)
    app[keys.MAX_IN_FLIGHT] = max_in_flight
    app.cleanup_ctx.extend([client_session, resolver_refresh, span_exporter, traffic_loop])
    app.on_startup.append(mark_ready)
    app.on_shutdown.append(mark_draining)
    return app


class InstanceRunner(web.BaseRunner):
    """Serves a nanoservice Application as `web.AppRunner` would (startup, shutdown and cleanup in the same
    order; the runner's keyword arguments go to aiohttp's RequestHandler), with `dispatch` in place of the
    Application's router and middleware."""

    __slots__ = ("app",)

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.app = app

    async def _make_server(self) -> web.Server:
        app = self.app
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        loop = asyncio.get_running_loop()

        def request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY_BYTES)

        serving = app[keys.SERVING]
        return SheddingServer(functools.partial(dispatch, app, serving), serving, request_factory=request_factory,
                              **self._kwargs)

    async def shutdown(self) -> None:
        await self.app.shutdown()

    async def _cleanup_server(self) -> None:
        await self.app.cleanup()


class SheddingServer(web.Server):
    """aiohttp's low-level server, whose connections answer shed requests themselves (`SheddingHandler`)."""

    def __init__(self, handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], serving: Serving,
                 **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.serving = serving

    def __call__(self) -> RequestHandler:
        return SheddingHandler(self, self.serving, loop=self._loop, **self._kwargs)


class SheddingHandler(RequestHandler):
    """aiohttp's connection handler with a cheaper 503: while the instance sheds, a request that arrives on an
    idle keep-alive connection is answered right where it is parsed, with no request object, task, dispatch or
    response object (those cost a 503 about as much CPU as a leaf GET). Everything else (a request queued
    behind another, one that is not shed, one whose body is still to come) goes aiohttp's way, in the order it
    arrived. This relies on RequestHandler's internals as of the aiohttp the locks pin;
    tests/nanoservice/test_shedding.py holds it to that over real sockets."""

    __slots__ = ("_serving",)

    def __init__(self, manager: web.Server, serving: Serving, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._serving = serving

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        # Only while shedding, on an idle connection (answers keep their order) whose peer reads what it is sent
        # (else aiohttp's way waits for it: a client that only sends cannot grow the write buffer).
        if waiter is None or waiter.done() or self._messages or self._paused or not at_limit(self._serving):
            super().data_received(data)
            return
        self._waiter = None  # parse without waking the request loop: what is shed here never reaches it
        try:
            super().data_received(data)
        finally:
            self._waiter = waiter
        messages, transport = self._messages, self.transport
        while messages and not self._upgraded and transport is not None and not transport.is_closing():
            answer = shed_message(self._serving, *messages[0])
            if answer is None:
                break
            messages.popleft()
            if self._parser is not None:
                self._parser.message_consumed()
            transport.write(answer)
            self._keepalive = True  # as the request loop after a keep-alive answer: the idle timer restarts
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if messages:
            waiter.set_result(None)
        elif self._buffer_paused:
            self._resume_reading_if_drained()
