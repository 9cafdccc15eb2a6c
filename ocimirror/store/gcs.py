"""The GCS backend (through gcsfs): the generation is an object's version for conditional writes."""

from __future__ import annotations

from datetime import datetime

from ..errors import StoreError
from .backend import AbandonedIngest
from .objectstore import ObjectStoreBackend, VersionConflict


class GCSBackend(ObjectStoreBackend):
    """GCS: the generation is the version; ``ifGenerationMatch`` replaces, with 0 meaning "does not exist"."""

    def abandoned_ingests(self, cutoff: datetime) -> list[AbandonedIngest]:
        """None that can be found: GCS has no API listing resumable upload sessions. An abandoned session
        stores nothing visible and GCS expires it after a week."""
        return []

    def remove_ingest(self, ingest: AbandonedIngest) -> bool:
        raise StoreError(f"{ingest.path}: GCS upload sessions cannot be removed, they expire on their own")

    def committed_size(self, key: str) -> int | None:
        bucket, name, _ = self.fs.split_path(key)
        try:
            return int(self.fs.call("GET", "b/{}/o/{}", bucket, name, json_out=True)["size"])
        except FileNotFoundError:
            return None

    def read_versioned(self, key: str) -> tuple[bytes | None, int | None]:
        bucket, name, _ = self.fs.split_path(key)
        try:
            metadata = self.fs.call("GET", "b/{}/o/{}", bucket, name, json_out=True)
            generation = int(metadata["generation"])
            # Metadata first, content second: the content is then never older than the generation, so a
            # write conditioned on that generation cannot be based on stale content.
            _, content = self.fs.call("GET", "b/{}/o/{}", bucket, name, alt="media", ifGenerationMatch=generation)
        except FileNotFoundError:
            return None, None
        except FileExistsError as error:  # 412: replaced between the two requests
            raise VersionConflict(key) from error
        return content, generation

    def write_if_version(self, key: str, content: bytes, version: int | None) -> None:
        from gcsfs.core import quote

        bucket, name, _ = self.fs.split_path(key)
        try:
            self.fs.call(
                "POST",
                f"{self.fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
                uploadType="media",
                name=name,
                ifGenerationMatch=str(version or 0),
                data=content,
                headers={"Content-Type": "application/octet-stream"},
            )
        except FileExistsError as error:  # gcsfs maps 412 Precondition Failed to FileExistsError
            raise VersionConflict(key) from error
