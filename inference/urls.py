"""URL map of the inference protocols: OIP v2 under /v2/, TF Serving's REST shape under /v1/models/.

Model names are ``{team}.{backbone name}`` (no "/"); TF Serving's ``:predict`` verb follows the
name, version or label, so the predict patterns come before the status patterns they resemble.
"""

from django.urls import path

from inference import oip_apis, tfserving_apis

# A protocol path segment: anything but "/" (model names hold dots and may hold spaces).
NAME = "<str:name>"

oip_patterns = [
    path("v2", oip_apis.OipServerMetadataApi.as_view(), name="oip-server"),
    path("v2/health/live", oip_apis.OipLiveApi.as_view(), name="oip-live"),
    path("v2/health/ready", oip_apis.OipReadyApi.as_view(), name="oip-ready"),
    path(f"v2/models/{NAME}", oip_apis.OipModelMetadataApi.as_view(), name="oip-model"),
    path(f"v2/models/{NAME}/ready", oip_apis.OipModelReadyApi.as_view(), name="oip-model-ready"),
    path(f"v2/models/{NAME}/infer", oip_apis.OipInferApi.as_view(), name="oip-infer"),
    path(f"v2/models/{NAME}/versions/<str:version>", oip_apis.OipModelMetadataApi.as_view(), name="oip-version"),
    path(
        f"v2/models/{NAME}/versions/<str:version>/ready",
        oip_apis.OipModelReadyApi.as_view(),
        name="oip-version-ready",
    ),
    path(f"v2/models/{NAME}/versions/<str:version>/infer", oip_apis.OipInferApi.as_view(), name="oip-version-infer"),
]

tfserving_patterns = [
    path(f"v1/models/{NAME}:predict", tfserving_apis.TfsPredictApi.as_view(), name="tfs-predict"),
    path(
        f"v1/models/{NAME}/versions/<str:version>:predict",
        tfserving_apis.TfsPredictApi.as_view(),
        name="tfs-version-predict",
    ),
    path(
        f"v1/models/{NAME}/labels/<str:label>:predict", tfserving_apis.TfsPredictApi.as_view(), name="tfs-label-predict"
    ),
    path(f"v1/models/{NAME}/metadata", tfserving_apis.TfsModelMetadataApi.as_view(), name="tfs-metadata"),
    path(
        f"v1/models/{NAME}/versions/<str:version>/metadata",
        tfserving_apis.TfsModelMetadataApi.as_view(),
        name="tfs-version-metadata",
    ),
    path(
        f"v1/models/{NAME}/labels/<str:label>/metadata",
        tfserving_apis.TfsModelMetadataApi.as_view(),
        name="tfs-label-metadata",
    ),
    path(f"v1/models/{NAME}", tfserving_apis.TfsModelStatusApi.as_view(), name="tfs-status"),
    path(f"v1/models/{NAME}/versions/<str:version>", tfserving_apis.TfsModelStatusApi.as_view(), name="tfs-version"),
    path(f"v1/models/{NAME}/labels/<str:label>", tfserving_apis.TfsModelStatusApi.as_view(), name="tfs-label"),
]

urlpatterns = oip_patterns + tfserving_patterns
