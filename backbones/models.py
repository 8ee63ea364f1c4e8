"""Backbone versions: immutable, checksummed network files shared by many heads."""

from django.db import models

from core.models import TrackedWork


class BackboneVersion(TrackedWork):
    WAITING = ("validating",)
    WORKING = ("validating",)
    LOST = "rejected"

    class Status(models.TextChoices):
        VALIDATING = "validating", "Validating"
        READY = "ready", "Ready"
        REJECTED = "rejected", "Rejected"
        DEDUPLICATED = "deduplicated", "Deduplicated"

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="backbones")
    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.VALIDATING)
    blob = models.ForeignKey("artifacts.Blob", on_delete=models.PROTECT, related_name="backbone_versions")
    filename = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    feature_layer = models.CharField(max_length=200, blank=True)
    weights_sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    spec = models.JSONField(default=dict, blank=True)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="children")
    duplicate_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    origin = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [models.UniqueConstraint(fields=["team", "name", "version"], name="unique_backbone_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def label(self) -> str:
        return f"backbone '{self.name}' v{self.version}"
