"""The embedded default's broker: kombu's filesystem transport, with messages written atomically.

kombu's filesystem channel creates a message file under its final name and only then writes it,
while a worker moves and reads every file whose name matches, without taking the writer's lock.
A worker polling at the wrong moment read an empty or half-written file and died with
"Unrecoverable error: JSONDecodeError" (seen under schemathesis against `make run`). Here a
message is written under a name no reader matches and renamed into place (`os.replace`, atomic
within one folder), so a reader sees a whole message or none.

modelhub/celery.py points the `filesystem://` scheme at this transport.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# A reader takes files named "<stamp>_<uuid>.<queue>.msg"; this prefix never looks like one.
PARTIAL_PREFIX = ".partial-"


class Channel(filesystem.Channel):
    """A filesystem channel whose messages appear in the queue folder only once complete."""

    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"{PARTIAL_PREFIX}{name}")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel`."""

    Channel = Channel
