"""The embedded default's broker never hands a worker a half-written message.

Through kombu's real Connection and the `filesystem://` URL the embedded default uses: a writer
paused in the middle of a message while a reader polls the folder (kombu's own channel hands the
reader the half-written file, which kills a worker with JSONDecodeError), and a writer racing a
reader that drains the folder as fast as it can.
"""

import builtins
import threading

from kombu import Connection

from modelhub import celery  # noqa: F401 - registers modelhub.broker for filesystem://
from modelhub.broker import PARTIAL_PREFIX, Channel

NUM_MESSAGES = 60
PAYLOAD_BYTES = 2 * 1024**2  # large enough that a write takes a while


def test_the_filesystem_scheme_uses_the_atomic_channel(tmp_path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "control_folder": str(tmp_path)}
    with Connection("filesystem://", transport_options=options) as connection:
        assert isinstance(connection.default_channel, Channel)


def _options(folder):
    for sub in ("control", "processed"):
        (folder / sub).mkdir(exist_ok=True)
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder / "control"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
    }


def test_a_message_paused_half_written_is_invisible_until_complete(tmp_path, monkeypatch):
    from modelhub import broker

    half_written, resume = threading.Event(), threading.Event()

    class PausedFile:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            half_written.set()
            assert resume.wait(30)
            return self.handle.write(data[len(data) // 2 :])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(broker, "open", lambda *a, **k: PausedFile(builtins.open(*a, **k)), raising=False)
    options = _options(tmp_path)

    def write():
        with Connection("filesystem://", transport_options=options) as connection:
            connection.SimpleQueue("paused").put({"text": "whole message"})

    writer = threading.Thread(target=write)
    writer.start()
    assert half_written.wait(30)
    with Connection("filesystem://", transport_options=options) as connection:
        queue = connection.SimpleQueue("paused")
        try:
            queue.get(block=True, timeout=0.5)
            raise AssertionError("a half-written message was handed to the reader")
        except queue.Empty:
            pass
        resume.set()
        writer.join(30)
        message = queue.get(block=True, timeout=5)
        assert message.payload == {"text": "whole message"}
        message.ack()


def test_a_reader_racing_a_writer_gets_every_message_whole(tmp_path):
    options = _options(tmp_path)
    received, errors = [], []
    done = threading.Event()

    def write():
        with Connection("filesystem://", transport_options=options) as connection:
            queue = connection.SimpleQueue("race")
            for index in range(NUM_MESSAGES):
                queue.put({"index": index, "blob": "x" * PAYLOAD_BYTES})
        done.set()

    def read():
        with Connection("filesystem://", transport_options=options) as connection:
            queue = connection.SimpleQueue("race")
            while len(received) < NUM_MESSAGES:
                try:
                    message = queue.get(block=True, timeout=0.001)
                except queue.Empty:
                    if done.is_set() and not any(tmp_path.glob("*.msg")):
                        break
                    continue
                except Exception as exc:  # a half-written file is a JSONDecodeError here
                    errors.append(exc)
                    break
                received.append(message.payload["index"])
                assert len(message.payload["blob"]) == PAYLOAD_BYTES
                message.ack()

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[:1]
    assert sorted(received) == list(range(NUM_MESSAGES))
    assert not list(tmp_path.glob(f"{PARTIAL_PREFIX}*"))
