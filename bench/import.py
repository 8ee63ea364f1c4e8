"""Benchmark `manage.py import_models` against the floor: loading the same files with Keras.

Usage: python bench/import.py --models 200 [--workdir DIR] [--keep] [--shape mixed|flat|nested]
       [--feature-layer NAME] [--branches]   (prints ONE JSON object as its last line)

With `--branches`, two models in three fine-tuned the top of the backbone (model i: its top
i % 3 inverted-residual blocks, moved as tests/branched_models.py moves them), and the import
runs with `--branches --min-shared-fraction 0.2`: a third of the heads are plain, the rest own
branches after block_15_add or block_14_add.

1. Builds N full MobileNetV2 models (96x96x3, alpha 1.0, include_top=False, pooling="avg")
   that share ONE backbone bit for bit and differ in a Dense head (seed and width vary per
   model). `--shape mixed` (default) alternates the two shapes users save: nested
   (`x = base(inputs, training=False)`, the Keras transfer-learning guide) and flattened
   (`keras.Model(base.input, Dense(...)(base.output))`). They are saved as task_000.keras...
   in a subprocess that holds one model at a time. With `--workdir DIR --keep` the files stay
   and a later run with the same N, shape and recipe reuses them.
2. FLOOR: a fresh subprocess loads the N files one after another with
   `keras.saving.load_model(path, compile=False)`, dropping each before the next.
   floor_s times that loop; floor_peak_rss_mb is the subprocess's peak RSS.
3. IMPORT: a fresh subprocess runs `manage.py import_models DIR --team bench
   --backbone-name mobilenet --json` on the embedded default (SQLite + filesystem artifacts
   in a fresh MODELHUB_HOME, migrated first). import_s is the whole command's wall time
   (Python start, Django and TensorFlow imports included); peak_rss_mb is its peak RSS. The
   command runs the import in-process, so that is the import's memory.

Peak RSS of both subprocesses comes from os.wait4 (the rusage of the reaped child, what
`/usr/bin/time -v` reports as "Maximum resident set size"). The floor runs first; both read
files the build just wrote (page cache warm for both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = 1  # bump when the models built change, so cached work dirs are rebuilt
SIZE = 96
WIDTHS = (10, 5, 3, 7, 2, 10, 4)
MANIFEST = "bench_import_manifest.json"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import embedded_env, randomize_batch_norm  # noqa: E402


def model_name(index: int) -> str:
    return f"task_{index:03d}"


def shape_of(index: int, shape: str) -> str:
    if shape == "mixed":
        return "nested" if index % 2 == 0 else "flat"
    return shape


def child_env(**extra: str) -> dict[str, str]:
    env = embedded_env()
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def run_measured(cmd: list[str], *, env: dict[str, str], cwd: Path, log_dir: Path, name: str) -> dict:
    """Run cmd; return wall seconds, exit code, stdout, stderr and the child's peak RSS (MiB)."""
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped above; keep Popen from waiting again
    return {
        "wall_s": wall_s,
        "rc": proc.returncode,
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
    }


def fail(message: str, result: dict | None = None) -> None:
    print(message, file=sys.stderr)
    if result is not None:
        print(f"--- exit code {result['rc']}; stdout (tail) ---", file=sys.stderr)
        print(result["stdout"][-4000:], file=sys.stderr)
        print("--- stderr (tail) ---", file=sys.stderr)
        print(result["stderr"][-4000:], file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# 1. Build (runs in its own subprocess: `bench/import.py --build-into DIR ...`)


def build_models(directory: Path, num_models: int, shape: str, rebuild_every: int, branches: bool = False) -> dict:
    """Save num_models full models into directory; return the backbone's last layer name."""
    import keras

    from tests.branched_models import fine_tuned_copy

    keras.utils.set_random_seed(0)
    template = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=1.0, include_top=False, weights=None, pooling="avg"
    )
    randomize_batch_norm(template, seed=0)  # trained-looking statistics, distinct per layer
    weights = template.get_weights()  # the ONE backbone, bit for bit in every file
    feature_layer = template.layers[-1].name
    del template

    base = None
    for index in range(num_models):
        if base is None or index % rebuild_every == 0:
            # Fresh session: same auto-generated layer names as the first build, and no
            # inbound nodes piling up on the shared base from earlier models.
            base = None
            keras.backend.clear_session()
            base = keras.applications.MobileNetV2(
                input_shape=(SIZE, SIZE, 3), alpha=1.0, include_top=False, weights=None, pooling="avg"
            )
            base.set_weights(weights)
            assert base.layers[-1].name == feature_layer, (base.layers[-1].name, feature_layer)
        width = WIDTHS[index % len(WIDTHS)]
        dense = keras.layers.Dense(
            width,
            activation="softmax",
            kernel_initializer=keras.initializers.GlorotUniform(seed=1000 + index),
            bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=2000 + index),
            name="predictions",
        )
        top = index % 3 if branches else 0
        tuned = fine_tuned_copy(base, top, seed=3000 + index) if top else base
        if shape_of(index, shape) == "nested":
            tuned.trainable = False  # the transfer-learning guide's pattern
            inputs = keras.Input((SIZE, SIZE, 3), name="image")
            x = tuned(inputs, training=False)
            x = keras.layers.Dropout(0.2, name="dropout")(x)
            model = keras.Model(inputs, dense(x), name=model_name(index))
        else:
            tuned.trainable = True
            model = keras.Model(tuned.input, dense(tuned.output), name=model_name(index))
        model.save(directory / f"{model_name(index)}.keras")
        del model, dense, tuned
    return {"feature_layer": feature_layer}


def cached_manifest(directory: Path, wanted: dict) -> dict | None:
    """The manifest of a previous --keep run with the same recipe, if its files are all there."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if any(manifest.get(key) != value for key, value in wanted.items()):
        return None
    names = sorted(p.name for p in directory.glob("*.keras"))
    if names != [f"{model_name(i)}.keras" for i in range(wanted["models"])]:
        return None
    return manifest


def prepare_models(directory: Path, args: argparse.Namespace, log_dir: Path) -> tuple[dict, bool, dict]:
    """Return (manifest, reused, build timings); builds in a subprocess unless a cache matches."""
    wanted = {"models": args.models, "shape": args.shape, "recipe": RECIPE, "size": SIZE, "branches": args.branches}
    manifest = cached_manifest(directory, wanted)
    if manifest is not None:
        return manifest, True, {"build_s": 0.0, "build_peak_rss_mb": None}
    (directory / MANIFEST).unlink(missing_ok=True)
    for stale in directory.glob("*.keras"):  # the command imports every .keras file in the dir
        stale.unlink()
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--build-into",
        str(directory),
        "--models",
        str(args.models),
        "--shape",
        args.shape,
        "--rebuild-every",
        str(args.rebuild_every),
        *(["--branches"] if args.branches else []),
    ]
    result = run_measured(cmd, env=child_env(), cwd=REPO, log_dir=log_dir, name="build")
    if result["rc"] != 0:
        fail("Building the models failed.", result)
    built = json.loads(result["stdout"].strip().splitlines()[-1])
    manifest = {**wanted, **built}
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return manifest, False, {"build_s": result["wall_s"], "build_peak_rss_mb": result["peak_rss_mb"]}


# ---------------------------------------------------------------------------------------------
# 2. Floor

FLOOR_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    start = time.perf_counter()
    import keras
    import_s = time.perf_counter() - start
    paths = sorted(Path(sys.argv[1]).glob("*.keras"))
    start = time.perf_counter()
    for path in paths:
        model = keras.saving.load_model(path, compile=False)
        del model
    loop_s = time.perf_counter() - start
    print(json.dumps({"files": len(paths), "loop_s": loop_s, "keras_import_s": import_s,
                      "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def measure_floor(directory: Path, log_dir: Path) -> dict:
    result = run_measured(
        [sys.executable, "-c", FLOOR_SCRIPT, str(directory)], env=child_env(), cwd=REPO, log_dir=log_dir, name="floor"
    )
    if result["rc"] != 0:
        fail("The floor (plain Keras loads) failed.", result)
    inner = json.loads(result["stdout"].strip().splitlines()[-1])
    return {**inner, "process_s": result["wall_s"], "peak_rss_mb": result["peak_rss_mb"]}


# ---------------------------------------------------------------------------------------------
# 3. Import


def parse_command_json(text: str) -> dict | None:
    """The command prints indented JSON; find the last object with a "status" key in text."""
    decoder = json.JSONDecoder()
    found = None
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict) and "status" in value:
            found = value
        index = text.find("{", end)
    return found


def needs_feature_layer(result: dict) -> bool:
    """Whether the command refused to run because no --feature-layer was given."""
    text = (result["stdout"] + result["stderr"]).lower()
    if "feature-layer" in text and "required" in text:  # argparse: the option is required
        return True
    report = parse_command_json(result["stdout"])
    if report is None:  # a CommandError before the import ran
        return "feature_layer" in text and "required" in text
    return False


def measure_import(
    directory: Path, feature_layer: str | None, fallback_layer: str, log_dir: Path, home: Path, branches: bool = False
) -> dict:
    env = child_env(MODELHUB_HOME=str(home), DJANGO_SETTINGS_MODULE="modelhub.settings")
    python = sys.executable
    migrate = subprocess.run(
        [python, "manage.py", "migrate", "--verbosity", "0"], env=env, cwd=REPO, capture_output=True, text=True
    )
    if migrate.returncode != 0:
        fail(f"migrate failed in {home}:\n{migrate.stdout[-2000:]}\n{migrate.stderr[-4000:]}")
    base_cmd = [
        python,
        "manage.py",
        "import_models",
        str(directory),
        "--team",
        "bench",
        "--backbone-name",
        "mobilenet",
        "--json",
        *(["--branches", "--min-shared-fraction", "0.2"] if branches else []),
    ]
    cmd = base_cmd + (["--feature-layer", feature_layer] if feature_layer else [])
    result = run_measured(cmd, env=env, cwd=REPO, log_dir=log_dir, name="import")
    fallback = False
    if result["rc"] != 0 and not feature_layer and needs_feature_layer(result):
        # Older code needs the feature layer: name the base's last (pooling) layer.
        fallback, feature_layer = True, fallback_layer
        result = run_measured(
            base_cmd + ["--feature-layer", feature_layer], env=env, cwd=REPO, log_dir=log_dir, name="import"
        )
    body = parse_command_json(result["stdout"])
    return {"result": result, "body": body, "feature_layer_passed": feature_layer, "feature_layer_fallback": fallback}


def check_import(measured: dict, num_models: int) -> None:
    result, body = measured["result"], measured["body"]
    if body is None:
        fail("import_models printed no JSON report.", result)
    report = body.get("report") or []
    ok = [entry for entry in report if entry.get("ok") and entry.get("head_version")]
    if body.get("status") != "succeeded" or len(ok) != num_models or result["rc"] != 0:
        errors = [f"  {e.get('filename')}: {e.get('error')}" for e in report if not e.get("ok")]
        message = (
            f"import_models did not import {num_models} heads: status {body.get('status')!r}, "
            f"{len(ok)} heads, exit code {result['rc']}.\n" + "\n".join(errors[:20])
        )
        fail(message, result)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--workdir", type=Path, help="where the .keras files go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the built files (reused by a later run)")
    parser.add_argument("--shape", choices=("mixed", "flat", "nested"), default="mixed")
    parser.add_argument("--feature-layer", help="pass --feature-layer to import_models (default: omit it)")
    parser.add_argument("--keep-home", action="store_true", help="keep the import's MODELHUB_HOME")
    parser.add_argument("--branches", action="store_true", help="2 models in 3 fine-tuned in their top blocks")
    parser.add_argument("--rebuild-every", type=int, default=25, help=argparse.SUPPRESS)
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.models < 1:
        parser.error("--models must be at least 1")

    if args.build_into is not None:  # the build subprocess
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(json.dumps(build_models(args.build_into, args.models, args.shape, args.rebuild_every, args.branches)))
        return

    created_dir = args.workdir is None or not args.workdir.exists()
    directory = Path(tempfile.mkdtemp(prefix="bench-import-")) if args.workdir is None else args.workdir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-import-logs-"))
    home = Path(tempfile.mkdtemp(prefix="bench-import-home-"))
    reused = False
    try:
        manifest, reused, build = prepare_models(directory, args, log_dir)
        files = sorted(directory.glob("*.keras"))
        total_file_mb = sum(p.stat().st_size for p in files) / 2**20

        floor = measure_floor(directory, log_dir)
        if floor["files"] != args.models:
            fail(f"The floor loaded {floor['files']} files, expected {args.models}.")
        measured = measure_import(
            directory, args.feature_layer, manifest["feature_layer"], log_dir, home, branches=args.branches
        )
        check_import(measured, args.models)
        result = measured["result"]
        import_s, peak = result["wall_s"], result["peak_rss_mb"]
        floor_s, floor_peak = floor["loop_s"], floor["peak_rss_mb"]
        report = {
            "models": args.models,
            "import_s": import_s,
            "floor_s": floor_s,
            "import_over_floor": import_s / floor_s,
            "peak_rss_mb": peak,
            "floor_peak_rss_mb": floor_peak,
            "rss_over_floor": peak / floor_peak,
            "total_file_mb": total_file_mb,
            "targets": {"import_over_floor": 1.0, "rss_over_floor": 2.0},
            "met": {
                "import_over_floor<=1.0": import_s / floor_s <= 1.0,
                "rss_over_floor<=2.0": peak / floor_peak <= 2.0,
            },
            "machine": f"{os.cpu_count()} CPU cores, no GPU",
            "shape": args.shape,
            "branches": args.branches,
            "branched_heads": sum(bool(e.get("branch")) for e in measured["body"].get("report") or []),
            "nested_models": sum(shape_of(i, args.shape) == "nested" for i in range(args.models)),
            "feature_layer_passed": measured["feature_layer_passed"],
            "feature_layer_fallback": measured["feature_layer_fallback"],
            "feature_layer_chosen": (measured["body"].get("report") or [{}])[0].get("feature_layer"),
            **build,
            "stored_mb": sum(p.stat().st_size for p in home.rglob("*") if p.is_file()) / 2**20,
            "reused_cached_models": reused,
            # import_s includes the Python start and Django + TensorFlow imports (~5 s here);
            # floor_s is the load loop alone. The floor's whole process, for comparison:
            "floor_process_s": floor["process_s"],
            "floor_keras_import_s": floor["keras_import_s"],
            "import_over_floor_process": import_s / floor["process_s"],
            "floor_self_peak_rss_mb": floor["self_peak_rss_mb"],
        }
        if measured["body"].get("summary"):
            report["import_summary"] = measured["body"]["summary"]
        print(json.dumps(report))
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"MODELHUB_HOME kept at {home}", file=sys.stderr)
        if args.keep:
            print(f"models kept in {directory}", file=sys.stderr)
        elif created_dir:
            shutil.rmtree(directory, ignore_errors=True)
        elif not reused:  # remove what this run built; files reused from a cache stay
            for path in directory.glob("*.keras"):
                path.unlink()
            (directory / MANIFEST).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
