"""What an untrusted model file may hold: the ceilings, and the names Keras gives its members."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
ASSETS_PREFIX = "assets/"
# What Keras 3's model.save() writes into a .keras zip; anything else is refused.
KNOWN_MEMBERS = frozenset({CONFIG_MEMBER, METADATA_MEMBER, WEIGHTS_MEMBER})
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SAVE_HINT = 'Save the model with model.save("x.keras") and upload that single file.'


@dataclass(frozen=True)
class Limits:
    """What one untrusted model file may hold. Every field is a ceiling.

    Attributes:
        max_bytes: the file's size.
        max_members: zip members.
        max_uncompressed_bytes: the zip's members unpacked, together.
        max_config_bytes: ``config.json`` unpacked.
        max_config_depth: nesting of lists and objects in ``config.json``.
        max_layers: layer entries in the config, nested models included.
        max_config_objects: serialised objects (anything with a ``class_name``) in the config.
        max_datasets: datasets in ``model.weights.h5``.
        max_declared_bytes: what the datasets declare (shape x item size), together.
        max_h5_depth: nesting of groups in ``model.weights.h5``.
    """

    max_bytes: int = 2 * 1024**3
    max_members: int = 10_000
    max_uncompressed_bytes: int = 8 * 1024**3
    max_config_bytes: int = 16 * 1024**2
    max_config_depth: int = 256
    max_layers: int = 20_000
    max_config_objects: int = 500_000
    max_datasets: int = 100_000
    max_declared_bytes: int = 8 * 1024**3
    max_h5_depth: int = 64

    @classmethod
    def from_kwargs(cls, **overrides: int | None) -> Limits:
        """Return the defaults with the given fields replaced (None keeps a default).

        Raises:
            TypeError: a keyword that is not a limit.
        """
        names = {field.name for field in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"Unknown limits {sorted(unknown)}; expected some of {sorted(names)}.")
        return replace(cls(), **{key: int(value) for key, value in overrides.items() if value is not None})
