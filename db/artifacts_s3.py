"""The S3 artifact store: the same keyed interface as the filesystem store, on a bucket of AWS S3 or of an
S3-compatible server (MinIO, Ceph, moto), under an optional key prefix. Writes go through boto3's managed
transfer (multipart above ``multipart_bytes``), and an object becomes visible only when its upload
completes, so a re-run task overwrites an artifact whole or not at all; an upload that fails is aborted,
and one whose process was killed leaves only invisible parts (``abort_incomplete_uploads`` removes them).
Errors come out as the built-in exceptions the workers already classify: a missing key is
``FileNotFoundError``, a refused one ``PermissionError``, a network or server failure ``ConnectionError``."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import mimetypes
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterator
from urllib.parse import urlparse

from db.artifact_keys import validate_key
from workers.engine.errors import InvalidInput

MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (all but the last)
_MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_REFUSED = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


@contextlib.contextmanager
def translated_errors(key: str) -> Iterator[None]:
    """Map botocore's errors on ``key`` to ``FileNotFoundError`` / ``PermissionError`` / ``ConnectionError``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise FileNotFoundError(f"no artifact {key!r}: {code}") from exc
        if code in _REFUSED:
            raise PermissionError(f"artifact store refused {key!r}: {code}") from exc
        raise ConnectionError(f"artifact store error on {key!r}: {exc}") from exc
    except BotoCoreError as exc:
        raise ConnectionError(f"artifact store unreachable for {key!r}: {exc}") from exc


class S3ArtifactStore:
    """Artifacts as objects ``<prefix>/<key>`` of one bucket. ``client`` is a boto3 S3 client (made by
    ``from_url`` with the endpoint URL of an S3-compatible server); credentials come from boto3's usual
    chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an instance role)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, multipart_bytes: int = 8 * 1024 * 1024) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        part = max(int(multipart_bytes), MIN_PART_BYTES)
        self.transfer = TransferConfig(multipart_threshold=part, multipart_chunksize=part)

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str = "", region: str = "",
                 multipart_bytes: int = 8 * 1024 * 1024) -> "S3ArtifactStore":
        """``s3://bucket/optional/prefix``; ``endpoint_url`` for an S3-compatible server (path-style URLs)."""
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise InvalidInput("s3:// artifact URLs need boto3: pip install 'quirkscope[s3]'",
                               field="QUIRKSCOPE_ARTIFACTS_URL") from exc
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 artifact URL looks like s3://bucket/prefix, got {url!r}")
        config = Config(retries={"max_attempts": 5, "mode": "standard"},
                        s3={"addressing_style": "path" if endpoint_url else "auto"},
                        connect_timeout=10, read_timeout=60)
        client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)
        return cls(client, parsed.netloc, parsed.path, multipart_bytes=multipart_bytes)

    def _object(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, name: str) -> str:
        return name[len(self.prefix) + 1:] if self.prefix else name

    @staticmethod
    def _extra(key: str) -> dict[str, str]:
        return {"ContentType": mimetypes.guess_type(key)[0] or "application/octet-stream"}

    def put_bytes(self, key: str, data: bytes) -> str:
        return self.put_stream(key, io.BytesIO(data))

    def put_stream(self, key: str, stream: BinaryIO) -> str:
        """Upload a readable binary stream (multipart when large); the object appears only when complete."""
        name = self._object(key)
        with translated_errors(key):
            self.client.upload_fileobj(stream, self.bucket, name, ExtraArgs=self._extra(key), Config=self.transfer)
        return key

    def put_file(self, key: str, path: str | Path) -> str:
        name = self._object(key)
        with translated_errors(key):
            self.client.upload_file(str(path), self.bucket, name, ExtraArgs=self._extra(key), Config=self.transfer)
        return key

    def open(self, key: str) -> BinaryIO:
        """A streaming body (``read``, ``iter_chunks``, ``close``) of the object."""
        name = self._object(key)
        with translated_errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=name)["Body"]

    def size(self, key: str) -> int:
        name = self._object(key)
        with translated_errors(key):
            return int(self.client.head_object(Bucket=self.bucket, Key=name)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def local_path(self, key: str) -> Path | None:
        self._object(key)
        return None

    def _names(self, prefix: str) -> Iterator[str]:
        base = self._object(prefix.rstrip("/")) if prefix else self.prefix
        listing = (base + "/") if base else ""
        paginator = self.client.get_paginator("list_objects_v2")
        with translated_errors(prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=listing):
                for obj in page.get("Contents", []):
                    yield obj["Key"]
            if prefix and self.exists(prefix.rstrip("/")):  # the prefix names one object
                yield base

    def keys(self, prefix: str = "") -> Iterator[str]:
        for name in sorted(set(self._names(prefix))):
            yield self._relative(name)

    def delete_prefix(self, prefix: str) -> int:
        names = sorted(set(self._names(prefix)))
        with translated_errors(prefix):
            for start in range(0, len(names), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": n} for n in names[start:start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(names)

    def abort_incomplete_uploads(self, older_than_s: float = 24 * 3600) -> int:
        """Abort multipart uploads under the prefix started more than ``older_than_s`` ago (their writer
        was killed before completing: nothing of them is visible, but their parts take space). A bucket
        lifecycle rule (AbortIncompleteMultipartUpload) does the same on the server side."""
        cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=older_than_s)
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        with translated_errors(self.prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=(self.prefix + "/") if self.prefix else ""):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] <= cutoff:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                           UploadId=upload["UploadId"])
                        aborted += 1
        return aborted

    def check(self) -> None:
        """Readiness probe: write, read back and delete a small object."""
        key = f".ready/{uuid.uuid4().hex}"
        self.put_bytes(key, b"ok")
        try:
            with contextlib.closing(self.open(key)) as body:
                if body.read() != b"ok":
                    raise OSError("artifact store read-back mismatch")
        finally:
            with translated_errors(key):
                self.client.delete_object(Bucket=self.bucket, Key=self._object(key))
