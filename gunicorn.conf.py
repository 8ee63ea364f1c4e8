"""gunicorn's settings for ModelHub's web process; gunicorn reads ./gunicorn.conf.py by itself.

Every start of gunicorn in this repository (``make run``, docker-compose, the Dockerfile, the
live-app tests) runs from the repository root, so these hooks apply to all of them; the command
lines keep their own options (bind, workers, timeouts).

Prometheus (GET /metrics, the metrics app): prometheus-client adds up the samples of every
worker process through files in PROMETHEUS_MULTIPROC_DIR, which must be set before a worker
imports it and must start empty. On start, the folder named by PROMETHEUS_MULTIPROC_DIR is
emptied (its *.db files), or, when it is unset, a fresh temporary folder is made (and removed on
exit). A worker that exits has its live gauges removed, so that they describe live processes only.
"""

import glob
import os
import shutil
import tempfile

_made_here = []


def on_starting(server):
    """Prepare an empty PROMETHEUS_MULTIPROC_DIR before any worker starts."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for path in glob.glob(os.path.join(folder, "*.db")):
            os.remove(path)
    else:
        folder = tempfile.mkdtemp(prefix="modelhub-prometheus-")
        _made_here.append(folder)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    server.log.info("Prometheus multiprocess folder: %s", folder)


def child_exit(server, worker):
    """Drop the live gauges of a worker process that exited."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the temporary multiprocess folder this start made."""
    for folder in _made_here:
        shutil.rmtree(folder, ignore_errors=True)
