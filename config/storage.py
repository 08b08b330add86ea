"""Where generated images, thumbnails and uploads are stored: `STORAGE_URL`.

Imported by `config/settings.py`, so nothing here touches Django's settings.

- empty (the default): local files under `MEDIA_ROOT` (FileSystemStorage).
- `file:///srv/easel/media`: local files under that folder.
- `s3://bucket[/prefix]?endpoint_url=http://minio:9000&region=us-east-1`: any
  S3-compatible object store through django-storages. Credentials come from the URL
  (`s3://KEY:SECRET@bucket`, or `access_key=` / `secret_key=` parameters) or else from
  `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) in the
  environment; without either, boto3's usual chain (instance role, ~/.aws) applies.

Objects are written private (`default_acl=private`) and never overwritten. Easel streams
them to their owner through its owner-checked views (`generation/files.py`), so the bucket
never needs to be public; `url()` is a signed URL that expires after `expire` seconds
(300 by default) for anything that asks for one.

Other parameters: `expire=<seconds>`, `acl=<canned acl>` (`acl=` empty sends no ACL
header, for buckets with ACLs disabled), `addressing_style=path|virtual` (path by
default when `endpoint_url` is set, as MinIO and most S3-compatible servers expect),
`signature_version=` (s3v4 by default), `verify=0` (self-signed TLS on a private endpoint).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

FILESYSTEM_BACKEND = "django.core.files.storage.FileSystemStorage"
S3_BACKEND = "storages.backends.s3.S3Storage"
DEFAULT_EXPIRE_SECONDS = 300

_KNOWN_PARAMS = {
    "endpoint_url", "region", "region_name", "access_key", "secret_key", "session_token", "expire", "acl",
    "addressing_style", "signature_version", "verify",
}


def storage_from_url(url: str, *, environ: Mapping[str, str] | None = None) -> dict:
    """The `STORAGES["default"]` entry for a `STORAGE_URL` value."""
    environ = os.environ if environ is None else environ
    url = (url or "").strip()
    if not url:
        return {"BACKEND": FILESYSTEM_BACKEND}
    parts = urlsplit(url)
    if parts.scheme == "file":
        return {"BACKEND": FILESYSTEM_BACKEND, "OPTIONS": {"location": unquote(parts.path)}}
    if parts.scheme != "s3":
        raise ImproperlyConfigured(f"STORAGE_URL: unsupported scheme {parts.scheme!r} (use s3:// or file://).")
    return {"BACKEND": S3_BACKEND, "OPTIONS": _s3_options(parts, environ)}


def _s3_options(parts, environ: Mapping[str, str]) -> dict:
    bucket = parts.hostname
    if not bucket:
        raise ImproperlyConfigured("STORAGE_URL: s3:// needs a bucket name, e.g. s3://easel-media.")
    params = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(params) - _KNOWN_PARAMS
    if unknown:
        raise ImproperlyConfigured(f"STORAGE_URL: unknown parameter(s) {', '.join(sorted(unknown))}.")

    # The netloc's hostname is lower-cased by urlsplit; bucket names are lower case anyway.
    options: dict = {
        "bucket_name": bucket,
        # Private objects, signed short-lived URLs, and never a silent overwrite of an
        # existing key (a name clash gets a suffix instead).
        "default_acl": params.get("acl", "private") or None,
        "querystring_auth": True,
        "querystring_expire": int(params.get("expire") or DEFAULT_EXPIRE_SECONDS),
        "file_overwrite": False,
    }
    prefix = parts.path.strip("/")
    if prefix:
        options["location"] = unquote(prefix)

    access_key = unquote(parts.username or "") or params.get("access_key") or environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = unquote(parts.password or "") or params.get("secret_key") or environ.get("AWS_SECRET_ACCESS_KEY", "")
    if bool(access_key) != bool(secret_key):
        raise ImproperlyConfigured("STORAGE_URL: give both an access key and a secret key, or neither.")
    if access_key:
        options["access_key"] = access_key
        options["secret_key"] = secret_key
    session_token = params.get("session_token") or environ.get("AWS_SESSION_TOKEN", "")
    if session_token:
        options["security_token"] = session_token

    endpoint_url = params.get("endpoint_url", "")
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    region = params.get("region") or params.get("region_name") or environ.get("AWS_DEFAULT_REGION", "")
    if region:
        options["region_name"] = region
    addressing_style = params.get("addressing_style") or ("path" if endpoint_url else "")
    if addressing_style:
        if addressing_style not in ("path", "virtual", "auto"):
            raise ImproperlyConfigured("STORAGE_URL: addressing_style is path, virtual or auto.")
        options["addressing_style"] = addressing_style
    # SigV4 everywhere: botocore would presign with the deprecated SigV2 for some
    # endpoints, which newer regions and several S3-compatible servers refuse.
    options["signature_version"] = params.get("signature_version") or "s3v4"
    if params.get("verify", "").lower() in ("0", "false", "no", "off"):
        options["verify"] = False
    return options


def describe(entry: dict) -> str:
    """A one-line, secret-free description of a storage entry, for logs and checks."""
    options = entry.get("OPTIONS", {})
    if entry["BACKEND"] == S3_BACKEND:
        where = options.get("endpoint_url") or "AWS"
        prefix = f"/{options['location']}" if options.get("location") else ""
        return f"s3://{options['bucket_name']}{prefix} at {where}"
    return f"local files at {options.get('location', 'MEDIA_ROOT')}"
