"""ModelHub's Python client: ``Client(url, token)`` and the ``modelhub`` command line.

from modelhub_client import Client, ModelHubError

hub = Client()  # MODELHUB_URL / MODELHUB_TOKEN, or what `modelhub login URL` saved
assembly = hub.assemble(team="vision", backbone=3, wait=True)
hub.download(assembly, "model.zip")  # streamed, sha256 checked
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelhub-client")
except PackageNotFoundError:  # run from a source tree, not installed
    __version__ = "0+source"

from modelhub_client.client import Client  # noqa: E402
from modelhub_client.errors import ModelHubError  # noqa: E402
from modelhub_client.models import (  # noqa: E402
    Assembly,
    Backbone,
    Dataset,
    Export,
    Head,
    Job,
    ModelImport,
    Team,
    Upload,
)
from modelhub_client.transfers import sha256_of  # noqa: E402

__all__ = [
    "Assembly",
    "Backbone",
    "Client",
    "Dataset",
    "Export",
    "Head",
    "Job",
    "ModelHubError",
    "ModelImport",
    "Team",
    "Upload",
    "__version__",
    "sha256_of",
]
