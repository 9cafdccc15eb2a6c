"""The S3 backend (through s3fs): the ETag is an object's version for conditional writes."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime

from fsspec.asyn import sync

from ..errors import StoreError
from .backend import AbandonedIngest
from .objectstore import ObjectStoreBackend, VersionConflict


class S3Backend(ObjectStoreBackend):
    """S3: the ETag is the version; ``If-Match`` replaces, ``If-None-Match: *`` creates (index.json and
    blobs alike)."""

    exclusive_create = True

    def abandoned_ingests(self, cutoff: datetime) -> list[AbandonedIngest]:
        """Multipart uploads under the store initiated before ``cutoff`` (ListMultipartUploads, paginated);
        their parts are billed until aborted."""
        bucket, prefix, _ = self.fs.split_path(self.root)
        found: list[AbandonedIngest] = []
        marker: dict[str, str] = {}
        while True:
            page = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=f"{prefix}/", **marker)
            for upload in page.get("Uploads", []):
                initiated = upload["Initiated"]
                initiated = initiated if initiated.tzinfo else initiated.replace(tzinfo=UTC)
                if initiated < cutoff:
                    parts = self.fs.call_s3("list_parts", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    size = sum(int(part["Size"]) for part in parts.get("Parts", []))
                    found.append(AbandonedIngest(f"{bucket}/{upload['Key']}", size, initiated, upload["UploadId"]))
            if not page.get("IsTruncated"):
                return found
            marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def remove_ingest(self, ingest: AbandonedIngest) -> bool:
        bucket, name, _ = self.fs.split_path(ingest.path)
        with suppress(FileNotFoundError):
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=name, UploadId=ingest.upload_id)
        return True

    def committed_size(self, key: str) -> int | None:
        bucket, name, _ = self.fs.split_path(key)
        try:
            return int(self.fs.call_s3("head_object", Bucket=bucket, Key=name)["ContentLength"])
        except FileNotFoundError:
            return None

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        bucket, name, _ = self.fs.split_path(key)
        try:
            found: tuple[bytes, str] = sync(self.fs.loop, self._get_object, bucket, name)  # fsspec is untyped
            return found
        except FileNotFoundError:
            return None, None

    async def _get_object(self, bucket: str, name: str) -> tuple[bytes, str]:
        """Body and ETag from one GET, so the content is exactly the version the ETag names."""
        response = await self.fs._call_s3("get_object", Bucket=bucket, Key=name)
        async with response["Body"] as body:
            return await body.read(), response["ETag"]

    def write_if_version(self, key: str, content: bytes, version: str | None) -> None:
        bucket, name, _ = self.fs.split_path(key)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=content, **condition)
        except FileExistsError as error:  # s3fs maps a failed If-None-Match to FileExistsError
            raise VersionConflict(key) from error
        except FileNotFoundError as error:
            # If-Match on an object deleted meanwhile is 404 NoSuchKey: re-read. Any other 404 (NoSuchBucket)
            # will not change by retrying.
            if _s3_error_code(error) == "NoSuchKey":
                raise VersionConflict(key) from error
            raise StoreError(f"cannot write {key}: {error}") from None
        except OSError as error:
            if _is_s3_conflict(error):
                raise VersionConflict(key) from error
            raise


def _is_s3_conflict(error: BaseException) -> bool:
    """Whether s3fs's translated error is S3 refusing a conditional write: 412 Precondition Failed, or 409
    ConditionalRequestConflict (another conditional write to the key in flight)."""
    response = getattr(error.__cause__, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _s3_error_code(error) in {"PreconditionFailed", "ConditionalRequestConflict"} or status in {409, 412}


def _s3_error_code(error: BaseException) -> str | None:
    """The S3 error code (``NoSuchKey``, ``PreconditionFailed``...) behind an error s3fs translated."""
    response = getattr(error.__cause__, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return code if isinstance(code, str) else None
