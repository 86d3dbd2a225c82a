"""S3 for the sandbox: moto's S3 behind a logging, fault-injecting reverse proxy on its own port.

Brightcove's Dynamic Ingest hands the fleet an S3 bucket, an object key and temporary
credentials, plus a presigned PUT URL; the fleet uploads with boto3 (one PUT, or a
multipart upload with the credentials) and Brightcove then reads the object
(``design/providers.md`` §1 "Get S3 upload URLs", §7; ``design/uploads.md`` §4). Here
moto's :class:`~moto.server.ThreadedMotoServer` plays S3, on a loopback port of its own
that only the sandbox talks to. Clients talk to the proxy at :attr:`S3Server.url`, which
forwards every request to moto unchanged - the request target and every end-to-end header,
``Host`` included, so SigV4 signatures and presigned URLs stay valid - and streams both
bodies in 1 MiB blocks, so a 200 MB part or object never sits in memory. Before
forwarding it applies the ``s3`` fault configuration (:mod:`sandbox.faults`: latency,
5xx, 429, rules, hang, drop) and it logs each request to the sandbox's request log.

Endpoint names (path-style addressing only, ``/{bucket}/{key}``, as boto3 uses against an
IP-address endpoint or with ``addressing_style="path"``):

============================  ====================================================
s3.put_object                 ``PUT /{bucket}/{key}`` (also a presigned ``signed_url``)
s3.create_multipart_upload    ``POST /{bucket}/{key}?uploads``
s3.upload_part                ``PUT /{bucket}/{key}?partNumber=N&uploadId=U``
s3.list_parts                 ``GET /{bucket}/{key}?uploadId=U``
s3.complete_multipart_upload  ``POST /{bucket}/{key}?uploadId=U``
s3.abort_multipart_upload     ``DELETE /{bucket}/{key}?uploadId=U``
s3.get_object                 ``GET /{bucket}/{key}``
s3.head_object                ``HEAD /{bucket}/{key}``
s3.other                      anything else (bucket-level calls, ...)
============================  ====================================================

A log entry's ``entity`` is ``bucket/key`` and ``part_number`` is the part of an
``s3.upload_part`` (null otherwise). Injected errors without a rule ``body`` use S3's XML
error format (``<Error><Code>SlowDown</Code>...``), which boto3 parses and retries like
the real thing. A request body without ``Content-Length`` gets 411
``MissingContentLength``: boto3 always sends the length over plain HTTP.

Signature-v2 query-string URLs (:meth:`S3Server.presign_put_v2`, Brightcove's
``signed_url``: ``?AWSAccessKeyId=..&Expires=..&Signature=..``, HMAC-SHA1 over the v2
string-to-sign ``PUT\n<Content-MD5>\n<Content-Type>\n<Expires>\n<x-amz-* headers><resource>``)
are checked by the proxy itself, as S3 does: a request whose Content-Type (or Content-MD5)
differs from what was signed gets 403 ``SignatureDoesNotMatch``, an expired one 403
``AccessDenied`` "Request has expired"; the signature parameters are removed before the
request goes on to moto.

moto's behaviour, kept as is (``design/uploads.md`` §4): parts under 5 MiB, except the
last, fail ``CompleteMultipartUpload`` with ``EntityTooSmall``; any credentials are
accepted and neither SigV4 signatures nor SigV4 presigned-URL expiry are checked; a
completed multipart object is assembled in memory. moto keeps its state per process, so two
sandboxes in one process share buckets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from .faults import FaultSpec
from .requestlog import RequestLog
from .web import BLOCK_SIZE, ClientGone, Request, Response, TrackedHTTPServer, abort_connection, write_response

if TYPE_CHECKING:
    from .faults import ProviderFaults

log = logging.getLogger(__name__)

REGION = "us-east-1"  # Brightcove's upload bucket's region (providers.md §1, B7)
ENDPOINTS = (
    "s3.put_object", "s3.create_multipart_upload", "s3.upload_part", "s3.list_parts",
    "s3.complete_multipart_upload", "s3.abort_multipart_upload", "s3.get_object", "s3.head_object", "s3.other",
)
#: Headers that describe one connection, not the request; everything else is passed on.
#: ``Expect`` is answered by the proxy itself (``100 Continue``); SigV4 never signs it.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                        "transfer-encoding", "expect"})
UPSTREAM_TIMEOUT = 600.0  # seconds; moto assembles a completed multipart object before answering
PRESIGN_TTL = 24 * 3600  # Brightcove's upload URLs are valid 24 h (providers.md §1, B7)
#: S3's own codes and messages for the statuses faults inject.
S3_ERRORS = {
    403: ("AccessDenied", "Access Denied"),
    411: ("MissingContentLength", "You must provide the Content-Length HTTP header."),
    429: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}
# The proxy's signing identity: moto accepts any credentials, but boto3 needs some.
_SANDBOX_KEY, _SANDBOX_SECRET = "SANDBOXACCESSKEY0001", "sandbox-secret-key"


def s3_error(status: int, code: str | None = None, message: str | None = None) -> Response:
    """An S3-style XML error for ``status`` (S3's usual code and message unless given)."""
    phrase = HTTPStatus(status).phrase
    default_code, default_message = S3_ERRORS.get(status, (phrase.replace(" ", ""), phrase))
    code, message = code or default_code, message or default_message
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message><RequestId>sandbox</RequestId></Error>")
    return Response(status, body.encode(), {"Content-Type": "application/xml"})


def classify(method: str, path: str, query: dict[str, list[str]]) -> tuple[str, str | None, int | None]:
    """``(endpoint name, "bucket/key" or None, part number or None)`` of a path-style request."""
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key:
        return "s3.other", None, None
    entity = f"{bucket}/{unquote(key)}"
    upload = "uploadId" in query
    if method == "PUT" and upload and "partNumber" in query:
        raw = query["partNumber"][0]
        return "s3.upload_part", entity, int(raw) if raw.isdigit() else None
    endpoint = {
        ("PUT", False): "s3.put_object",
        ("POST", False): "s3.create_multipart_upload" if "uploads" in query else "s3.other",
        ("GET", True): "s3.list_parts",
        ("POST", True): "s3.complete_multipart_upload",
        ("DELETE", True): "s3.abort_multipart_upload",
        ("GET", False): "s3.get_object",
        ("HEAD", False): "s3.head_object",
    }.get((method, upload), "s3.other")
    return endpoint, entity, None


class S3Server:
    """moto's S3 on loopback plus the proxy in front of it; the proxy's socket is bound at construction.

    ``faults()`` returns the ``s3`` fault configuration when a request arrives (the
    sandbox's registry is built after its emulators, which already need this server).
    Buckets named with :meth:`add_bucket` exist from then on, and again after every
    :meth:`reset`.
    """

    provider = "s3"

    def __init__(self, host: str, port: int = 0, *, log: RequestLog, faults: Callable[[], ProviderFaults],
                 stopping: threading.Event):
        self._log = log
        self._faults = faults
        self._stopping = stopping
        # moto logs every request through werkzeug's logger at INFO; the sandbox keeps its own log.
        werkzeug_log = logging.getLogger("werkzeug")
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)
        # moto is reached only through the proxy (or by the sandbox itself): loopback is enough.
        self._moto = ThreadedMotoServer(ip_address="::1" if ":" in host else "127.0.0.1", port=0, verbose=False)
        self._moto.start()
        self._upstream = self._moto.get_host_and_port()
        self._httpd = _ProxyServer((host, port), self)
        self.url = f"http://{_address(*self._httpd.server_address[:2])}"
        session = boto3.session.Session()  # sessions are not thread-safe; the clients made here are
        config = Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                        retries={"mode": "standard", "max_attempts": 3})
        credentials = {"aws_access_key_id": _SANDBOX_KEY, "aws_secret_access_key": _SANDBOX_SECRET}
        # The sandbox's own reads go straight to moto: they are neither logged nor faulted.
        self._client = session.client("s3", endpoint_url=f"http://{_address(*self._upstream)}", region_name=REGION,
                                      config=config, **credentials)
        self._presigner = session.client("s3", endpoint_url=self.url, region_name=REGION, config=config, **credentials)
        self._buckets: list[str] = []
        self._thread: threading.Thread | None = None

    @classmethod
    def fault_spec(cls) -> FaultSpec:
        return FaultSpec(routes=frozenset(ENDPOINTS), error_format=s3_error)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="sandbox-s3-proxy", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the proxy and moto; the caller has set ``stopping``, which wakes faulted requests."""
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._moto.stop()

    def reset(self) -> None:
        """Forget every bucket and object (``POST /moto-api/reset``), then recreate the standing buckets."""
        conn = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        finally:
            conn.close()
        for bucket in self._buckets:
            self._client.create_bucket(Bucket=bucket)

    # -- what emulators use ----------------------------------------------------------

    def add_bucket(self, bucket: str) -> None:
        """Create ``bucket`` now and after every reset."""
        if bucket not in self._buckets:
            self._buckets.append(bucket)
            self._client.create_bucket(Bucket=bucket)

    def object_url(self, bucket: str, key: str) -> str:
        """The object's path-style URL on the proxy (the key percent-encoded, ``/`` kept)."""
        return f"{self.url}/{bucket}/{quote(key)}"

    def presign_put(self, bucket: str, key: str, expires: int = PRESIGN_TTL) -> str:
        """A presigned SigV4 ``PUT`` URL for ``bucket/key`` on the proxy."""
        return self._presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key},
                                                      ExpiresIn=expires)

    def presign_put_v2(self, bucket: str, key: str, expires: int = PRESIGN_TTL, content_type: str = "") -> str:
        """A signature-v2 presigned ``PUT`` URL for ``bucket/key`` that signs ``content_type``
        ("" = the request must carry no Content-Type), as Brightcove's ``signed_url``."""
        resource = f"/{bucket}/{quote(key)}"
        until = int(time.time()) + expires
        signature = _v2_signature(_SANDBOX_SECRET, "PUT", "", content_type, str(until), {}, resource)
        query = urlencode({"AWSAccessKeyId": _SANDBOX_KEY, "Expires": until, "Signature": signature})
        return f"{self.url}{resource}?{query}"

    def _check_v2(self, req: Request, target: str) -> tuple[Response | None, str]:
        """A v2 query-signed request: (403 if its signature or expiry fails, target without the signature)."""
        parts = urlsplit(target)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        given = dict(pairs)
        if "Signature" not in given or "AWSAccessKeyId" not in given:
            return None, target
        rest = urlencode([(k, v) for k, v in pairs if k not in ("AWSAccessKeyId", "Expires", "Signature")])
        stripped = parts.path + (f"?{rest}" if rest else "")
        if given["AWSAccessKeyId"] != _SANDBOX_KEY:
            return s3_error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our "
                                                       "records."), stripped
        amz = {k.lower(): v.strip() for k, v in req.headers.items() if k.lower().startswith("x-amz-")}
        expected = _v2_signature(_SANDBOX_SECRET, req.method, req.header("Content-MD5") or "",
                                 req.header("Content-Type") or "", given.get("Expires", ""), amz, parts.path)
        if not hmac.compare_digest(expected.encode(), given["Signature"].encode()):
            return s3_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the "
                                                          "signature you provided. Check your key and signing "
                                                          "method."), stripped
        if not given.get("Expires", "").isdigit() or int(given["Expires"]) < time.time():
            return s3_error(403, "AccessDenied", "Request has expired"), stripped
        return None, stripped

    def probe(self, bucket: str, key: str, head_bytes: int = 12) -> tuple[int, bytes] | None:
        """``(size, first head_bytes bytes)`` of an object, or None if there is no such object."""
        try:
            size = self._client.head_object(Bucket=bucket, Key=key)["ContentLength"]
            if size == 0:
                return 0, b""
            body = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{head_bytes - 1}")["Body"]
            with body:
                return size, body.read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NoSuchBucket"):
                return None
            raise

    def objects(self, bucket: str) -> list[dict[str, Any]]:
        """Every object of ``bucket``: ``key``, ``size``, ``sha256`` (read in blocks), ``etag``."""
        out = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                digest = hashlib.sha256()
                try:
                    body = self._client.get_object(Bucket=bucket, Key=obj["Key"])["Body"]
                except ClientError:  # deleted since the listing
                    continue
                with body:
                    for block in body.iter_chunks(BLOCK_SIZE):
                        digest.update(block)
                out.append({"key": obj["Key"], "size": obj["Size"], "sha256": digest.hexdigest(),
                            "etag": obj["ETag"].strip('"')})
        return out

    def multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads of ``bucket`` neither completed nor aborted: ``key``, ``upload_id``."""
        uploads = []
        for page in self._client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            uploads += [{"key": u["Key"], "upload_id": u["UploadId"]} for u in page.get("Uploads", [])]
        return uploads

    # -- the proxy (called on the connection's thread) --------------------------------

    def _serve(self, h: _ProxyHandler) -> None:
        started = time.time()
        req = Request(h.command, h.path, h.headers, h.rfile)
        endpoint, entity, part_number = classify(req.method, req.path, req.query)
        fault = None
        response: Response | None
        if req.framing_error is not None:
            response = s3_error(req.framing_error.status)
            h.close_connection = True  # the body cannot be skipped without its length
        else:
            try:
                decision = self._faults().decide(endpoint, req.method, req.content_length)
                fault = decision.fault
                if decision.latency:
                    self._stopping.wait(decision.latency)
                if decision.response is not None:
                    response = decision.response
                    req.drain()
                elif decision.hang is not None:
                    self._stopping.wait(decision.hang)
                    raise ClientGone("hang fault: closing without an answer")
                else:
                    refused, target = self._check_v2(req, h.path)
                    if refused is not None:
                        response = refused
                        req.drain()
                    else:
                        if decision.drop_after is not None:
                            req.cut_after(decision.drop_after)
                        response = self._forward(target, req, corrupt=decision.corrupt)
            except ClientGone:
                response = None
        # Logged before answering, as the sandbox's own requests are: a client that has its
        # answer finds the request in the log.
        self._log.record(t=started, provider=self.provider, method=req.method, path=req.path, endpoint=endpoint,
                         status=response.status if response else None, bytes_in=req.bytes_in, entity=entity,
                         fault=fault, part_number=part_number)
        if response is None:
            abort_connection(h)
        else:
            write_response(h, req, response, relay=True)

    def _forward(self, target: str, req: Request, *, corrupt: bool = False) -> Response:
        """Send the request to moto, streaming its body; answer moto's response, body streamed.

        Raises :class:`ClientGone` if the client's body ends early (moto then stores nothing).
        A ``Content-MD5`` header is checked against the body received, as S3 does (moto does
        not): the body is spooled (to disk past 8 MiB) and hashed first, and a mismatch is
        answered 400 ``BadDigest`` ("The Content-MD5 you specified did not match what we
        received", S3 API reference, Error responses) without storing anything.
        """
        expected_md5 = req.headers.get("Content-MD5")
        body: Iterator[bytes] = req.iter_body()
        if expected_md5:
            spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
            digest = hashlib.md5(usedforsecurity=False)
            for block in req.iter_body():
                if corrupt and block:
                    block, corrupt = bytes([block[0] ^ 0xFF]) + block[1:], False
                digest.update(block)
                spool.write(block)
            if base64.b64encode(digest.digest()).decode() != expected_md5:
                spool.close()
                return s3_error(400, "BadDigest", "The Content-MD5 you specified did not match what we received.")
            spool.seek(0)
            body = _spooled(spool)
        conn = http.client.HTTPConnection(*self._upstream, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(req.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in req.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    conn.putheader(name, value)
            conn.endheaders()
            for block in body:
                if corrupt and block:  # no checksum to catch it: S3 stores the damaged bytes
                    block, corrupt = bytes([block[0] ^ 0xFF]) + block[1:], False
                conn.send(block)
            upstream = conn.getresponse()
        except ClientGone:
            conn.close()
            raise
        except (OSError, http.client.HTTPException):
            log.exception("S3 proxy: moto did not answer %s %s", req.method, req.path)
            conn.close()
            req.drain()
            return s3_error(502)
        headers = {name: value for name, value in upstream.getheaders()
                   if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"}
        length = upstream.getheader("Content-Length")
        if req.method == "HEAD" or upstream.status in (204, 304):
            conn.close()
            return Response(upstream.status, iter(()), headers, length=int(length) if length else None)
        if length is None:  # moto sets a length on every object body; only small bodies lack one
            body = upstream.read()
            conn.close()
            return Response(upstream.status, body, headers)
        return Response(upstream.status, _relay(conn, upstream), headers, length=int(length))


def _spooled(spool: Any) -> Iterator[bytes]:
    try:
        while block := spool.read(BLOCK_SIZE):
            yield block
    finally:
        spool.close()


def _relay(conn: http.client.HTTPConnection, upstream: http.client.HTTPResponse) -> Iterator[bytes]:
    try:
        while block := upstream.read(BLOCK_SIZE):
            yield block
    finally:
        conn.close()


def _v2_signature(secret: str, method: str, md5: str, content_type: str, expires: str, amz: dict[str, str],
                  resource: str) -> str:
    """S3 signature version 2: base64 HMAC-SHA1 of the string-to-sign."""
    amz_lines = "".join(f"{k}:{amz[k]}\n" for k in sorted(amz))
    string_to_sign = f"{method}\n{md5}\n{content_type}\n{expires}\n{amz_lines}{resource}"
    return base64.b64encode(hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: boto3 reuses its connections
    server_version = "ingest-fleet-sandbox-s3"
    timeout = 120  # seconds of client silence before the connection is dropped
    disable_nagle_algorithm = True  # see sandbox.server._Handler
    server: _ProxyServer

    def _serve(self) -> None:
        self.server.s3._serve(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: requests go to the sandbox's request log."""


class _ProxyServer(TrackedHTTPServer):
    label = "S3 proxy"

    def __init__(self, address: tuple[str, int], s3: S3Server):
        self.s3 = s3
        super().__init__(address, _ProxyHandler)
