"""Stream a blob to an HTTP client with its sha256 in ETag and Digest headers."""

import base64

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from artifacts.models import Blob
from artifacts.services import blob_open
from artifacts.stores import CHUNK_BYTES


def _chunks(stream):
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()


def blob_download_response(blob: Blob, *, filename: str, content_type: str = "application/octet-stream"):
    """Return a streamed response of the blob; clients verify it against the ETag / Digest."""
    response = StreamingHttpResponse(_chunks(blob_open(blob=blob)), content_type=content_type)
    response["Content-Length"] = str(blob.size_bytes)
    # RFC 6266: an ASCII fallback plus filename*=UTF-8''..., so quotes and non-ASCII names are safe.
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["ETag"] = f'"{blob.sha256}"'
    response["Digest"] = "sha-256=" + base64.b64encode(bytes.fromhex(blob.sha256)).decode()
    response["X-Checksum-Sha256"] = blob.sha256
    return response
