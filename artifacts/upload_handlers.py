"""Stream uploads to temp files on disk, enforcing MODELHUB_MAX_UPLOAD_BYTES as bytes arrive."""

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler

from core.errors import PayloadTooLargeError
from core.middleware import too_large_message


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Like Django's TemporaryFileUploadHandler, but aborts past the upload limit.

    The middleware already refuses a declared Content-Length over the limit; this catches
    bodies that do not declare one. The partial temp file is closed (and so deleted).
    """

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.received_bytes = 0
        return super().handle_raw_input(input_data, META, content_length, boundary, encoding)

    def receive_data_chunk(self, raw_data, start):
        self.received_bytes += len(raw_data)
        limit = settings.MODELHUB_MAX_UPLOAD_BYTES
        if self.received_bytes > limit:
            self.file.close()
            raise PayloadTooLargeError(too_large_message(limit, None))
        return super().receive_data_chunk(raw_data, start)
