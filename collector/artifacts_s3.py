"""Artifacts in S3-compatible object storage (``s3://BUCKET/PREFIX``), through boto3.

Layout as on disk: ``PREFIX/sha256/ab/abcdef...``. An upload streams: the
content goes out in parts of ``PART_BYTES`` (a multipart upload; one part in
memory at a time), hashed on the way, and the upload is completed only if
the content has the size and sha256 its last chunk announced; otherwise it
is aborted and nothing becomes visible. An object already there under that
sha256 with that size is not uploaded again, so a retried upload and two
runs with one file cost nothing more.

Why boto3: it is the reference client, it reads credentials the way every
AWS tool does (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``,
``~/.aws/credentials`` and ``config``, web identity and instance roles), it
takes ``endpoint_url`` (or ``AWS_ENDPOINT_URL_S3``) for S3-compatible servers,
and its explicit multipart calls let us bound memory and check the hash
before anything is published. obstore is faster but async-first and reads
fewer of those credential sources; minio's client wants credentials passed in.

URL options: ``endpoint=URL`` (an S3-compatible server), ``region=NAME``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from mltrail.collector.artifacts import ArtifactStore, Verifier
from mltrail.common.errors import PermanentError, RetryableError

PART_BYTES = 16 * 1024 * 1024  # S3 wants parts of at least 5 MiB (but the last)


class S3ArtifactStore(ArtifactStore):
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        unknown = set(options) - {"endpoint", "region"}
        if unknown or not parts.netloc:
            raise PermanentError(
                f"artifact URL {url!r}: use s3://BUCKET[/PREFIX][?endpoint=URL][&region=NAME]"
                + (f" (unknown option(s) {sorted(unknown)})" if unknown else ""))
        super().__init__(".")
        self.url = url
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/") + "/" if parts.path.strip("/") else ""
        self._endpoint = options.get("endpoint")
        self._region = options.get("region")
        self._local = threading.local()  # a boto3 client is not for several threads

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore.config import Config

            client = self._local.client = boto3.session.Session().client(
                "s3", endpoint_url=self._endpoint, region_name=self._region,
                config=Config(retries={"max_attempts": 3, "mode": "standard"},
                              connect_timeout=5, read_timeout=60))
        return client

    def key_for(self, sha256: str) -> str:
        return f"{self.prefix}sha256/{sha256[:2]}/{sha256}"

    def prepare(self) -> None:
        """At start: check that the bucket answers, or say clearly why not."""
        try:
            self._client().head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise PermanentError(
                f"{_translate(exc, 'reach the bucket', self.url)}; nothing was started; "
                "check --artifacts, the endpoint and the credentials (AWS_ACCESS_KEY_ID, "
                "AWS_PROFILE, ~/.aws/credentials)") from None

    def put_stream(self, pieces: Iterable[bytes], sha256: str, size: int, where: str) -> None:
        key = self.key_for(sha256)
        if self._size_of(key) == size:
            return
        client = self._client()
        upload = self._call("start an upload", client.create_multipart_upload,
                            Bucket=self.bucket, Key=key)["UploadId"]
        try:
            check = Verifier(where, sha256, size)
            done: list[dict[str, Any]] = []
            part = bytearray()
            for piece in pieces:
                check.update(piece)
                part += piece
                if len(part) >= PART_BYTES:
                    done.append(self._part(key, upload, len(done) + 1, part))
                    part = bytearray()
            if part or not done:
                done.append(self._part(key, upload, len(done) + 1, part))
            check.finish()
            self._call("finish an upload", client.complete_multipart_upload,
                       Bucket=self.bucket, Key=key, UploadId=upload,
                       MultipartUpload={"Parts": done})
        except BaseException:
            self._abort(key, upload)
            raise

    def _part(self, key: str, upload: str, number: int, data: bytearray) -> dict[str, Any]:
        answer = self._call("upload a part", self._client().upload_part, Bucket=self.bucket,
                            Key=key, UploadId=upload, PartNumber=number, Body=bytes(data))
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _abort(self, key: str, upload: str) -> None:
        # what this cannot abort, the bucket's lifecycle rule for incomplete uploads removes
        with contextlib.suppress(Exception):
            self._client().abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)

    def _size_of(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self._client().head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _translate(exc, f"look up {key}", self.url) from None
        except Exception as exc:
            raise _translate(exc, f"look up {key}", self.url) from None

    def read(self, sha256: str, chunk: int) -> Generator[bytes, None, None]:
        from botocore.exceptions import ClientError

        key = self.key_for(sha256)
        try:
            body = self._client().get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(2, "no such object", f"{self.url} {key}") from None
            raise _translate(exc, f"read {key}", self.url) from None
        try:
            yield from body.iter_chunks(chunk)
        finally:
            body.close()

    def remove(self, sha256: str) -> None:
        """Delete a stored object (no run refers to it any more); a missing one is fine."""
        self._call("delete an object", self._client().delete_object, Bucket=self.bucket,
                   Key=self.key_for(sha256))

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as exc:
            raise _translate(exc, what, self.url) from None


def _translate(exc: Exception, what: str, url: str) -> RetryableError:
    """Every failure after start is retryable: a server down, throttling, and also a
    refusal (credentials rotated, a bucket policy changed) never cost data; the batch is
    answered UNAVAILABLE and the agent keeps it and resends."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return RetryableError(f"artifact store {url}: cannot {what} "
                          f"({code or type(exc).__name__}: {exc}); nothing was stored; "
                          "retry later", retry_after=1.0)
