"""Content-addressed blobs (one row per distinct sha256) and staged uploads."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Blob(models.Model):
    """A stored byte string, keyed by its sha256. The store holds it before this row exists."""

    sha256 = models.CharField(max_length=64, unique=True)
    size_bytes = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Stored again or reused by a new upload (blob_store_path): gc's age check reads this, so a
    # blob someone just started to use again is never collected before its reference exists.
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.size_bytes} B)"


class Upload(models.Model):
    """A file a team member uploaded, kept by reference to its blob (POST /api/uploads/)."""

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="uploads")
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="uploads")
    filename = models.CharField(max_length=255)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.blob.sha256[:12]})"
