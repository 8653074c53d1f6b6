"""Object storage behind one small interface, S3 (boto3): AWS S3, MinIO, Ceph RGW.

Two areas, as the original service had two buckets: ``upload`` holds ``raw/<md5>`` (and
the Jobs' result records under ``results/``), ``public`` holds ``<md5>`` and
``<md5>_<W>x<H>``. Keys, ``Cache-Control`` and metadata are exactly the original's.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from pinster_images.config import CONNECTION_POOL, Environ, env_choice, env_optional, env_str
from pinster_images.errors import ConfigError, NotFoundError, TemporaryError

CACHE_CONTROL = "max-age=86400"
RAW_PREFIX = "raw/"


class Area(enum.StrEnum):
    UPLOAD = "upload"
    PUBLIC = "public"


def raw_key(md5: str) -> str:
    return f"{RAW_PREFIX}{md5}"


def thumbnail_key(md5: str, size: str) -> str:
    return f"{md5}_{size}"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str
    cache_control: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    #: When the object was last written (``head`` only), for age-based clean-up.
    modified: datetime | None = None


@dataclass(frozen=True)
class PresignedPost:
    """A form a client POSTs to ``url`` (multipart, ``fields`` then the file as ``file``)
    to store one object under the conditions the signature fixes."""

    url: str
    fields: dict[str, str]


@dataclass(frozen=True)
class StoredObject:
    info: ObjectInfo
    data: bytes


Body = bytes | IO[bytes]


class Storage(ABC):
    """What every backend offers. Errors: NotFoundError, TemporaryError, PermanentError."""

    @abstractmethod
    def bucket(self, area: Area) -> str:
        """The bucket (or directory) name of an area, as recorded in ImageUpload specs."""

    @abstractmethod
    def head(self, area: Area, key: str) -> ObjectInfo | None:
        """Object info, or None when the key does not exist."""

    @abstractmethod
    def get(self, area: Area, key: str) -> StoredObject: ...

    @abstractmethod
    def stream(self, area: Area, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in chunks, read as they arrive (NotFoundError if missing)."""

    @abstractmethod
    def presigned_post(
        self,
        area: Area,
        key: str,
        *,
        content_type: str,
        content_md5: str,
        max_bytes: int,
        metadata: dict[str, str],
        expires_in: int,
    ) -> PresignedPost:
        """A signed permission to store exactly ``key``: that content type, that
        ``Content-MD5`` (base64 of the digest), 1 to ``max_bytes`` bytes, that metadata
        and ``Cache-Control``, until ``expires_in`` seconds from now."""

    @abstractmethod
    def put(
        self,
        area: Area,
        key: str,
        body: Body,
        *,
        content_type: str,
        cache_control: str | None = CACHE_CONTROL,
        metadata: dict[str, str] | None = None,
        if_absent: bool = False,
    ) -> bool:
        """Write atomically: readers never see a half-written object. With ``if_absent``
        an existing object is kept as it is. True when written."""

    @abstractmethod
    def delete(self, area: Area, key: str) -> None:
        """Remove; a missing key is not an error."""

    @abstractmethod
    def list(self, area: Area, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def public_url(self, key: str) -> str: ...

    @abstractmethod
    def check(self) -> None:
        """Raise TemporaryError when the backend cannot be reached (readiness)."""

    def exists(self, area: Area, key: str) -> bool:
        return self.head(area, key) is not None


# --- S3 ------------------------------------------------------------------------------


class S3Storage(Storage):
    """AWS S3 or anything speaking its API (MinIO, Ceph RGW) through boto3.

    Credentials come from boto3's standard chain (environment, profile, IRSA...)."""

    def __init__(
        self,
        upload_bucket: str,
        public_bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        public_url: str | None = None,
        direct_url: str | None = None,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self._buckets = {Area.UPLOAD: upload_bucket, Area.PUBLIC: public_bucket}
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=5,
                max_pool_connections=CONNECTION_POOL,
            ),
        )
        if public_url is None:
            if endpoint_url:
                public_url = f"{endpoint_url.rstrip('/')}/{public_bucket}"
            else:
                public_url = f"https://{public_bucket}.s3.{region or 'us-east-1'}.amazonaws.com"
        self._public_url = public_url.rstrip("/")
        #: where clients send presigned POSTs, when not where this process reaches S3
        self._direct_url = direct_url.rstrip("/") if direct_url else None

    def bucket(self, area: Area) -> str:
        return self._buckets[area]

    @staticmethod
    def _translate(exc: Exception, what: str) -> Exception:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = S3Storage._error_code(exc)
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in ("404", "NoSuchKey", "NotFound"):
                return NotFoundError(f"{what} does not exist")
            if code == "NoSuchBucket":
                return TemporaryError(f"{what}: bucket does not exist", reason="StorageUnavailable")
            if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                return TemporaryError(f"{what}: S3 answered {code}", reason="StorageUnavailable")
            return TemporaryError(f"{what}: S3 refused with {code}", reason="StorageRefused")
        if isinstance(exc, BotoCoreError):
            return TemporaryError(f"{what}: {exc}", reason="StorageUnavailable")
        return exc

    def head(self, area: Area, key: str) -> ObjectInfo | None:
        try:
            response = self._client.head_object(Bucket=self._buckets[area], Key=key)
        except Exception as exc:
            translated = self._translate(exc, f"s3://{self._buckets[area]}/{key}")
            if isinstance(translated, NotFoundError):
                return None
            raise translated from exc
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            content_type=response.get("ContentType", "application/octet-stream"),
            cache_control=response.get("CacheControl"),
            metadata=dict(response.get("Metadata", {})),
            modified=response.get("LastModified"),
        )

    def get(self, area: Area, key: str) -> StoredObject:
        try:
            response = self._client.get_object(Bucket=self._buckets[area], Key=key)
            data = response["Body"].read()
        except Exception as exc:
            raise self._translate(exc, f"s3://{self._buckets[area]}/{key}") from exc
        info = ObjectInfo(
            key=key,
            size=len(data),
            content_type=response.get("ContentType", "application/octet-stream"),
            cache_control=response.get("CacheControl"),
            metadata=dict(response.get("Metadata", {})),
        )
        return StoredObject(info=info, data=data)

    def stream(self, area: Area, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        what = f"s3://{self._buckets[area]}/{key}"
        try:
            body = self._client.get_object(Bucket=self._buckets[area], Key=key)["Body"]
        except Exception as exc:
            raise self._translate(exc, what) from exc
        try:
            while chunk := body.read(chunk_size):
                yield chunk
        except Exception as exc:
            raise self._translate(exc, what) from exc
        finally:
            body.close()

    def presigned_post(
        self,
        area: Area,
        key: str,
        *,
        content_type: str,
        content_md5: str,
        max_bytes: int,
        metadata: dict[str, str],
        expires_in: int,
    ) -> PresignedPost:
        fields = {
            "Content-Type": content_type,
            "Content-MD5": content_md5,
            "Cache-Control": CACHE_CONTROL,
            **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
        }
        # Every form field is pinned by an exact condition: S3 refuses a form that
        # changes one, or adds a field the policy does not name.
        conditions: list[Any] = [{name: value} for name, value in fields.items()]
        conditions.append(["content-length-range", 1, max_bytes])
        try:
            signed = self._client.generate_presigned_post(
                Bucket=self._buckets[area],
                Key=key,
                Fields=fields,
                Conditions=conditions,
                ExpiresIn=expires_in,
            )
        except Exception as exc:
            raise self._translate(
                exc, f"signing a POST to s3://{self._buckets[area]}/{key}"
            ) from exc
        url = str(signed["url"])
        if self._direct_url is not None:
            # The policy signs the bucket and key, not the host: clients may reach the
            # store by another name than this process does.
            url = f"{self._direct_url}/{self._buckets[area]}"
        return PresignedPost(url=url, fields={k: str(v) for k, v in signed["fields"].items()})

    def put(
        self,
        area: Area,
        key: str,
        body: Body,
        *,
        content_type: str,
        cache_control: str | None = CACHE_CONTROL,
        metadata: dict[str, str] | None = None,
        if_absent: bool = False,
    ) -> bool:
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": metadata or {}}
        if cache_control is not None:
            extra["CacheControl"] = cache_control
        if if_absent:
            # S3's conditional write (AWS since 2024, MinIO, Ceph RGW): one request where
            # HEAD then PUT took two, and no race between two writers of the same key.
            extra["IfNoneMatch"] = "*"
        try:
            self._client.put_object(Bucket=self._buckets[area], Key=key, Body=body, **extra)
        except Exception as exc:
            # 412: the key exists. (A 409 ConditionalRequestConflict, another conditional
            # write of it under way, is translated as any refusal: the caller retries.)
            if if_absent and self._error_code(exc) == "PreconditionFailed":
                return False
            raise self._translate(exc, f"s3://{self._buckets[area]}/{key}") from exc
        return True

    @staticmethod
    def _error_code(exc: Exception) -> str:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            return str(exc.response.get("Error", {}).get("Code", ""))
        return ""

    def delete(self, area: Area, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self._buckets[area], Key=key)
        except Exception as exc:
            translated = self._translate(exc, f"s3://{self._buckets[area]}/{key}")
            if not isinstance(translated, NotFoundError):
                raise translated from exc

    def list(self, area: Area, prefix: str = "") -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self._buckets[area], Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]
        except Exception as exc:
            raise self._translate(exc, f"s3://{self._buckets[area]}/{prefix}*") from exc

    def public_url(self, key: str) -> str:
        return f"{self._public_url}/{key}"

    #: what S3 answers when the credentials themselves are wrong
    _BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken")

    def check(self) -> None:
        """Both buckets answer a listing. Settings that cannot work (credentials S3
        refuses, a bucket that does not exist) raise ConfigError naming the setting; a
        store that does not answer raises TemporaryError."""
        from botocore.exceptions import ClientError

        for area, bucket in self._buckets.items():
            variable = (
                "PINSTER_S3_UPLOAD_BUCKET" if area == Area.UPLOAD else "PINSTER_S3_PUBLIC_BUCKET"
            )
            try:
                # A listing, not HEAD: its error answers carry S3's error code.
                self._client.list_objects_v2(Bucket=bucket, MaxKeys=1)
            except ClientError as exc:
                code = self._error_code(exc)
                if code in self._BAD_CREDENTIALS:
                    raise ConfigError(
                        f"S3 refused the credentials for bucket {bucket!r} ({code}): check "
                        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the chart's "
                        "storage.s3.credentialsSecret)"
                    ) from exc
                if code == "AccessDenied":
                    raise ConfigError(
                        f"S3 denies these credentials (AWS_ACCESS_KEY_ID) access to bucket "
                        f"{bucket!r} ({variable}): allow s3:ListBucket, GetObject, PutObject "
                        "and DeleteObject on it"
                    ) from exc
                if code == "NoSuchBucket":
                    raise ConfigError(f"bucket {bucket!r} ({variable}) does not exist") from exc
                raise self._translate(exc, f"{area} bucket {bucket!r}") from exc
            except Exception as exc:
                raise self._translate(exc, f"{area} bucket {bucket!r}") from exc


# --- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageSettings:
    endpoint_url: str | None
    region: str | None
    upload_bucket: str
    public_bucket: str
    public_url: str | None
    #: the S3 endpoint clients reach for direct uploads (path-style), if not endpoint_url
    direct_url: str | None = None

    @classmethod
    def from_env(cls, env: Environ) -> StorageSettings:
        # One backend; the variable stays so that configurations naming it keep working,
        # and one naming the removed directory backend is told so.
        env_choice(env, "PINSTER_STORAGE_BACKEND", "s3", ("s3",))
        return cls(
            endpoint_url=env_optional(env, "PINSTER_S3_ENDPOINT_URL"),
            region=env_optional(env, "PINSTER_S3_REGION") or env_optional(env, "AWS_REGION"),
            upload_bucket=env_str(env, "PINSTER_S3_UPLOAD_BUCKET"),
            public_bucket=env_str(env, "PINSTER_S3_PUBLIC_BUCKET"),
            public_url=env_optional(env, "PINSTER_PUBLIC_URL"),
            direct_url=env_optional(env, "PINSTER_S3_DIRECT_URL"),
        )

    def open(self) -> Storage:
        return S3Storage(
            self.upload_bucket,
            self.public_bucket,
            endpoint_url=self.endpoint_url,
            region=self.region,
            public_url=self.public_url,
            direct_url=self.direct_url,
        )
