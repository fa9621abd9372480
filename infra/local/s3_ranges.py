"""Ranged S3 reads answered from moto's store directly, without moto's copies of the object.

moto answers every ranged GetObject by reading the whole object into memory twice and then
slicing it, so reading one badge of a 100 MB export costs 200 MB of copying: on the local stack
that, not the service, was where an export's time and memory went. The stack answers those
reads from the same store, in this process, with only the bytes asked for. Anything out of the
ordinary (a missing key or version, a failed If-Match, an odd range) still goes to moto, which
answers it as S3 would.
"""

from __future__ import annotations

import io
import re
from typing import Any

from botocore.response import StreamingBody

from infra.local.aws_calls import Answer
from infra.local.cloudformation import ACCOUNT_ID

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def serve_range(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
    if service != "s3" or operation != "GetObject":
        return None
    match = _RANGE.fullmatch(str(params.get("Range", "")))
    if match is None or set(params) - {"Bucket", "Key", "Range", "IfMatch", "VersionId"}:
        return None
    from moto.backends import get_backend

    try:
        key = get_backend("s3")[ACCOUNT_ID]["aws"].get_object(
            params["Bucket"], params["Key"], version_id=params.get("VersionId")
        )
    except Exception:  # no such bucket, key or version: moto says so
        return None
    if key is None or not hasattr(key, "_value_buffer"):
        return None
    etag = str(key.etag).strip('"')
    if "IfMatch" in params and str(params["IfMatch"]).strip('"') != etag:
        return None
    begin, end = int(match.group(1)), int(match.group(2))
    size = int(key.size)
    if begin > end or begin >= size:
        return None
    end = min(end, size - 1)
    with key.lock:
        key._value_buffer.seek(begin)
        data = key._value_buffer.read(end - begin + 1)
    response: dict[str, Any] = {
        "Body": StreamingBody(io.BytesIO(data), len(data)),
        "ContentLength": len(data),
        "ContentRange": f"bytes {begin}-{end}/{size}",
        "ETag": f'"{etag}"',
        "AcceptRanges": "bytes",
        "ResponseMetadata": {"HTTPStatusCode": 206, "HTTPHeaders": {}},
    }
    if getattr(key, "version_id", None):
        response["VersionId"] = key.version_id
    raise Answer(response)
