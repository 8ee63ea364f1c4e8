"""The one reader of untrusted model bytes: every check runs before any byte is used.

Teams upload ``.keras`` files they did not write, so every path that opens one (worker
validation, import, compare, packing head weights, branches, dataset zips) goes through this
module. It reads in three stages and refuses at the first problem, saying what it found,
where, and why:

1. **The zip.** Size, member count, total unpacked size (zip bombs), member names (absolute,
   ``..``, duplicates such as two ``model.weights.h5``), symlink members, encrypted members,
   unknown compression, members Keras never writes.
2. **The config.** ``config.json`` size, nesting depth (checked on the raw bytes before the
   JSON parser recurses), number of layers and objects, then the allow-list: built-in Keras
   classes and a few keras-hub classes by exact registered name, never Lambda or custom code.
3. **The weights.** ``model.weights.h5`` is walked *by its links* before any dataset is read:
   only hard links (no soft or external links, no user-defined ones), no named datatypes, and
   for every dataset no external storage, no virtual layout, only the built-in filters (gzip,
   shuffle, fletcher32, lzf), a numeric or string dtype (never object or region references,
   compounds, opaque or variable-length data), a bounded count and declared total, and storage
   in proportion to what it declares (a 1 kB file cannot declare 128 MB). Data are read only
   through :meth:`UntrustedKerasFile.read_dataset`, which refuses NaN and Inf weights.

Keras 3's own ``safe_get_h5_dataset`` checks are a floor; this module does not rely on them.
Nothing here imports TensorFlow or Keras: the web process may use it (inside a function) to
compare validated heads.
"""

from modelhub.ml.untrusted.config import check_config_safe, json_nesting_depth, parse_json_member
from modelhub.ml.untrusted.h5 import DatasetInfo, check_h5
from modelhub.ml.untrusted.keras_file import UntrustedKerasFile, read_config
from modelhub.ml.untrusted.limits import (
    ASSETS_PREFIX,
    CONFIG_MEMBER,
    SAVE_HINT,
    WEIGHTS_MEMBER,
    Limits,
)
from modelhub.ml.untrusted.zip_members import check_zip_members

__all__ = [
    "ASSETS_PREFIX",
    "CONFIG_MEMBER",
    "SAVE_HINT",
    "WEIGHTS_MEMBER",
    "DatasetInfo",
    "Limits",
    "UntrustedKerasFile",
    "check_config_safe",
    "check_h5",
    "check_zip_members",
    "json_nesting_depth",
    "parse_json_member",
    "read_config",
]
