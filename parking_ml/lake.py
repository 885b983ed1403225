"""The lake: one object-store root (local folder or S3) addressed by relative keys.

Every write goes to a temporary name beside the target and is then renamed (local) or uploaded whole
(S3, where a PUT is atomic), so a crash never leaves a half-written object under its final key.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

from parking_ml.config import Settings


@dataclass(frozen=True)
class Lake:
    url: str
    storage_options: dict[str, Any]

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(settings.lake_url, settings.storage_options())

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        # fsspec caches filesystem instances per (protocol, options): cheap to ask for repeatedly
        return fsspec.filesystem(self.protocol, **self.storage_options)

    @property
    def root(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/")

    def path(self, key: str = "") -> str:
        """Filesystem path (no scheme) of a key, as fsspec wants it."""
        key = key.strip("/")
        return f"{self.root}/{key}" if key else self.root

    def uri(self, key: str = "") -> str:
        return f"{self.protocol}://{self.path(key)}"

    def local_path(self, key: str = "") -> Path:
        if not self.is_local:
            raise ValueError(f"{self.url} is not a local lake; download the object instead")
        return Path(self.path(key))

    # --- reads ---------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.fs.exists(self.path(key))

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def size(self, key: str) -> int:
        return int(self.fs.size(self.path(key)))

    def modified(self, key: str) -> datetime:
        """When the object was last written, in UTC (local file mtime, or S3's LastModified)."""
        when = self.fs.modified(self.path(key))
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    def list(self, prefix: str = "", *, recursive: bool = True) -> list[str]:
        """Keys (relative to the root) of the files under prefix, sorted; [] if nothing is there."""
        base = self.path(prefix)
        if not self.fs.exists(base):
            return []
        if recursive:
            found = self.fs.find(base)
        else:
            found = list(self.fs.ls(base, detail=False))
        root = self.root + "/"
        out = []
        for p in found:
            p = p.split("://", 1)[-1]
            if p.startswith(root):
                out.append(p[len(root) :])
        return sorted(out)

    def iter_files(self, prefix: str = "") -> Iterator[str]:
        yield from self.list(prefix)

    # --- writes --------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> None:
        """Atomic write: temp name then rename locally; a single PUT on object stores."""
        target = self.path(key)
        if self.is_local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def write_parquet(self, key: str, frame: Any) -> None:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        self.write_bytes(key, buf.getvalue())

    def read_parquet(self, key: str) -> Any:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(key)))

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.fs.rm(self.path(key))

    def move(self, src: str, dst: str) -> None:
        """Move within the lake; the destination appears whole or not at all."""
        if self.is_local:
            Path(self.path(dst)).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.path(src), self.path(dst))
        else:
            self.fs.copy(self.path(src), self.path(dst))
            self.fs.rm(self.path(src))


def s3_overrides(login: str | None, password: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """Settings overrides (s3_endpoint_url, s3_access_key_id, s3_secret_access_key) from the fields of an
    aws-type connection (Airflow's login / password / extra); only what the connection actually sets."""
    extra = extra or {}
    endpoint = extra.get("endpoint_url") or ((extra.get("service_config") or {}).get("s3") or {}).get("endpoint_url")
    out: dict[str, Any] = {}
    if endpoint:
        out["s3_endpoint_url"] = endpoint
    key = login or extra.get("aws_access_key_id")
    secret = password or extra.get("aws_secret_access_key")
    if key and secret:
        out["s3_access_key_id"] = key
        out["s3_secret_access_key"] = secret
    return out
