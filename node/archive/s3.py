"""S3 and S3-compatible services (AWS, MinIO, SeaweedFS, Ceph) through boto3.

Configuration is the AWS SDK's own: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
or AWS_PROFILE, AWS_ENDPOINT_URL for another service, AWS_REGION (or AWS_DEFAULT_REGION).
With a custom endpoint, requests are path-style (http://host/bucket/key), which every
S3-compatible server serves; KVSTORE_S3_ADDRESSING_STYLE=virtual|path|auto overrides that.

Writes are create-only: `If-None-Match: *` on the PUT (or on completing a multipart upload),
which AWS, MinIO, SeaweedFS and moto honour. The SHA-256 goes with the object as the metadata
`x-amz-meta-sha256`, and every download is checked against it. botocore retries throttling and
network errors a bounded number of times with exponential backoff and jitter (`standard` mode).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .store import (
    HASH_CHUNK_BYTES,
    ArchiveError,
    IntegrityError,
    ObjectExists,
    ObjectInfo,
    ObjectMissing,
    Source,
    check_name,
    sha256_of,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PART_BYTES = 16 << 20  # multipart above this; S3 wants parts of 5 MiB to 5 GiB
MIN_PART_BYTES = 5 << 20
MAX_ATTEMPTS = 5  # botocore's retries, the first attempt included
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
DIGEST_KEY = "sha256"
_ADDRESSING: dict[str, Literal["path", "virtual", "auto"]] = {"path": "path", "virtual": "virtual", "auto": "auto"}
_EXISTS_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


def _client() -> S3Client:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    style = os.environ.get("KVSTORE_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    addressing = _ADDRESSING.get(style)
    if addressing is None:
        raise ArchiveError(f"KVSTORE_S3_ADDRESSING_STYLE={style!r}: use path, virtual or auto")
    config = Config(
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        s3={"addressing_style": addressing},
        # Only when the service asks: S3-compatible servers differ on the newer default checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    session = boto3.session.Session(region_name=region)
    return session.client("s3", endpoint_url=endpoint, config=config)


class S3Store:
    def __init__(self, bucket: str, prefix: str, part_bytes: int = PART_BYTES) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ArchiveError(f"part size {part_bytes} is below S3's minimum of {MIN_PART_BYTES} bytes")
        self.bucket = bucket
        self.prefix = prefix
        self.part_bytes = part_bytes
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self._s3 = _client()

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _fail(self, action: str, name: str, exc: Exception) -> ArchiveError:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        where = f"{self.url}/{name}"
        if code in _EXISTS_CODES:
            return ObjectExists(f"{where} already exists; objects are never overwritten")
        if code in _MISSING_CODES:
            return ObjectMissing(f"{where} does not exist")
        return ArchiveError(f"{action} {where} failed: {exc}")

    def put(self, name: str, source: Source) -> str:
        key = self._key(name)
        digest = sha256_of(source)
        try:
            if _size(source) <= self.part_bytes:
                body = source if isinstance(source, bytes) else source.read()
                self._s3.put_object(
                    Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*", Metadata={DIGEST_KEY: digest}
                )
            else:
                self._multipart(key, source, digest)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("uploading", name, exc) from exc
        return digest

    def _multipart(self, key: str, source: Source, digest: str) -> None:
        """Parts of `part_bytes`; the object appears only when the upload completes, or never."""
        upload = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata={DIGEST_KEY: digest})
        upload_id = upload["UploadId"]
        try:
            parts: list[Any] = []
            for number, chunk in enumerate(_chunks(source, self.part_bytes), start=1):
                part = self._s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except BaseException:
            # If the abort fails too, the bucket's lifecycle rule for incomplete uploads is the backstop.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def _recorded_digest(self, name: str, metadata: dict[str, str]) -> str:
        recorded = metadata.get(DIGEST_KEY)
        if recorded is None:
            raise IntegrityError(f"{self.url}/{name} has no recorded SHA-256 (x-amz-meta-sha256); not used")
        return recorded

    def get(self, name: str, dest: Path) -> str:
        key = self._key(name)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                response = self._s3.get_object(Bucket=self.bucket, Key=key)
                expected = self._recorded_digest(name, response["Metadata"])
                for chunk in response["Body"].iter_chunks(HASH_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                raise IntegrityError(
                    f"{self.url}/{name}: SHA-256 is {digest.hexdigest()}, recorded {expected}; not used"
                )
            tmp.replace(dest)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("downloading", name, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return expected

    def read(self, name: str) -> bytes:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=self._key(name))
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("reading", name, exc) from exc
        expected = self._recorded_digest(name, response["Metadata"])
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IntegrityError(f"{self.url}/{name}: SHA-256 is {actual}, recorded {expected}; not used")
        return data

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = f"{self.prefix}/" if self.prefix else ""
        found: list[ObjectInfo] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    found.append(ObjectInfo(item["Key"][len(base) :], item["Size"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("listing", prefix or "(all)", exc) from exc
        return found

    def delete(self, name: str) -> None:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(name))
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("deleting", name, exc) from exc


def _size(source: Source) -> int:
    """What is left to read of `source`."""
    if isinstance(source, bytes):
        return len(source)
    start = source.tell()
    end = source.seek(0, os.SEEK_END)
    source.seek(start)
    return end - start


def _chunks(source: Source, size: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), size):
            yield source[start : start + size]
        return
    while chunk := source.read(size):
        yield chunk
