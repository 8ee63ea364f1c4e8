"""The client's tests import modelhub_client from client/src (the end-to-end test installs it instead)."""

import sys

from tests.conftest import REPO_ROOT

CLIENT_SOURCE = str(REPO_ROOT / "client" / "src")
if CLIENT_SOURCE not in sys.path:
    sys.path.insert(0, CLIENT_SOURCE)
