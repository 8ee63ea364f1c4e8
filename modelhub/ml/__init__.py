"""ModelHub's TensorFlow/Keras core: pure functions over arrays, files and Keras models.

Nothing here imports Django; submodules import TensorFlow, this package file does not.
Every deliberate failure is a subclass of :class:`modelhub.ml.errors.MLError`.

Public API, one module (or package) per job; keyword-only where marked ``*``. Packages have a
face (``__init__``) that only documents their modules: import from the module itself.
tests/ml/test_public_api.py imports every name listed here and checks the keywords shown.

``modelhub.ml.untrusted``  (the one reader of uploaded model bytes; no TensorFlow)
    Limits(max_bytes, max_members, max_uncompressed_bytes, max_config_bytes, max_config_depth,
           max_layers, max_config_objects, max_datasets, max_declared_bytes, max_h5_depth)
    UntrustedKerasFile(path, *, limits=None, weights=True)   # zip, config, HDF5 checked on open
        .config, .datasets, .read_dataset(path), .iter_datasets(prefix), .check_values(), .info()
    check_zip_members(infos, *, what, max_members, max_unpacked) -> int   # also for dataset zips
    read_config(path, *, limits=None) -> dict

``modelhub.ml.tolerance``  (imports nothing: the web side may read it)
    VERIFY_TOLERANCE = 1e-5     # max |expected - got| <= VERIFY_TOLERANCE * max(1, max |expected|)

``modelhub.ml.probes``
    probe_inputs_for(model, *, num_rows=4, seed=0) -> np.ndarray | dict[str, np.ndarray]
    check_close(expected, got, *, what, error=HeadExtractionError, rtol=VERIFY_TOLERANCE) -> dict

``modelhub.ml.safe_load``
    check_keras_archive(path, **limits) -> dict              # every check + layout + finite weights
    load_keras_model(path, **limits) -> keras.Model          # safe_mode=True, compile=False

``modelhub.ml.inspect``
    inspect_model(model, *, feature_layer=None) -> dict      # inputs, feature shape, params, layers
    weights_fingerprint(model) -> str                        # sha256 over names, shapes, bytes
    backbone_up_to(model, feature_layer, *, copy=False) -> keras.Model
    copy_model(model) -> keras.Model
    check_head_compatible(head, feature_shape, *, backbone_label="backbone") -> None

``modelhub.ml.keras_file.graph``  (no TensorFlow)
    parse_config(config) -> FlatGraph                        # FlatGraph.resolve(layer), .ancestors(index)

``modelhub.ml.keras_file.archive``  (no TensorFlow)
    KerasArchive(path, *, limits=None)                       # context manager: .graph, .layer_state(key)

``modelhub.ml.keras_file.align``  (no TensorFlow)
    align(reference, candidate, *, stop_at=None) -> Alignment
    cut_error(graph, feature) -> str | None

``modelhub.ml.keras_file.submodel``
    build_submodel(archive, output, *, start=None, start_name="features", name="model") -> keras.Model
    backbone_from_file(path, feature_layer, *, name=None, limits=None) -> keras.Model
    ends_at(path, feature_layer, *, limits=None) -> bool

``modelhub.ml.split.single``
    split_full_model(backbone_path, full_path, *, name="head") -> keras.Model
    cut_heads(archive, feature, *, name, label) -> [(output name, keras.Model)]   # one head per output
    output_names(archive) -> [str]

``modelhub.ml.split.family``
    ModelSource(label, fetch, head_name="head", name_heads=None)   # dataclass
    split_family(sources, *, feature_layer, on_head, check_file, min_shared_fraction=0.5,
                 backbone_name="backbone", branches=False) -> FamilySplit   # FamilySplitError

``modelhub.ml.branches``
    cut_backbone(path, after_layers, *, include_top=True, name="trunk") -> Trunk
    extract_branch(path, after_layer, *, name="branch", feature_layer=None) -> (keras.Model, BranchInfo)
    describe_points(path) -> list[dict]
    fine_tune_branch_point(path, backbone, num_layers) -> str
    branch_from_fine_tune(*, parent_path, parent, tuned, head, trained_layers, name="branch",
                          probe=None) -> (keras.Model, BranchInfo, dict)
    trunk_until(backbone, after_layer) -> keras.Model

``modelhub.ml.grow``
    grow_model(model, *, kind, after=None, layer=None, units=None, kernel_size=3, hidden_units=None,
               train="new", probe_inputs=None, rtol=VERIFY_TOLERANCE, seed=0) -> dict
    compare_outputs(reference, candidate, inputs) -> dict
    KINDS = ("dense_identity", "conv_identity", "residual", "widen")

``modelhub.ml.freeze``
    freeze_backbone(model) -> dict
    unfreeze_top(model, num_layers) -> dict                  # counts weight-bearing layers only

``modelhub.ml.features``  (x: one array, or {input name: array}; text as arrays of str)
    dataset_sha256(x) -> str                                 # strings by UTF-8 bytes and lengths
    compute_features(backbone, x, *, batch_size=64) -> np.ndarray
    check_inputs(backbone, x) -> x                           # names, kinds, shapes, row counts
    num_rows(x) -> int
    take_rows(x, rows) -> x
    keras_inputs(x) -> x                                     # strings as tf.string for Model.fit
    cached_features(backbone, x, *, cache_dir, batch_size=64, fingerprint=None) -> tuple[np.ndarray, dict]

``modelhub.ml.callbacks``
    ProgressAndCancel(epochs, progress, should_cancel)       # keras.callbacks.Callback
    early_stopping(patience) -> keras.callbacks.EarlyStopping  # on val_loss

``modelhub.ml.compare``  (no TensorFlow: the web process may call it on validated files)
    compare_head_weights(path_a, path_b, **limits) -> dict
    compare_outputs(outputs_a, outputs_b) -> dict

``modelhub.ml.head_weights``
    dense_chain_of(model) -> DenseChain | None
    pack(chain) -> bytes
    unpack(data, *, what="packed head weights") -> DenseChain
    PackedDenseHead                                          # a Dense chain read on demand

``modelhub.ml.train.model``
    build_head(feature_shape, *, units, kind="dense", activation="softmax",
               hidden_units=(), dropout=0.0, name="head", seed=None) -> keras.Model
    feature_shape(backbone) -> tuple[int, ...]
    make_trainable(model) -> None

``modelhub.ml.train.heads``
    train_head(*, backbone, head, x, y, epochs, ..., validation_data=None,
               early_stopping_patience=None) -> dict
    train_heads(*, backbone, heads, x, ys, epochs, mode="joint", ...) -> dict   # or "disjoint"

``modelhub.ml.train.backbone``
    fine_tune(*, backbone, head, x, y, phase1_epochs, phase2_epochs, unfreeze_layers, ...) -> dict
    train_grown_backbone(*, backbone, x, y, num_classes, epochs, ...) -> dict

``modelhub.ml.train.evaluate``
    evaluate_head(backbone, head, x, y, *, batch_size=64) -> dict
    evaluate_head_outputs(backbone, head, x, y, *, batch_size=64, cache_dir=None) -> (dict, np.ndarray)
    head_validation_metrics(head, features, y) -> dict       # val_loss, val_accuracy | val_mae

``modelhub.ml.assembly.manifest``
    AssemblyHead(task, model, version, sha256, labels=None, branch=None)   # dataclass

``modelhub.ml.assembly.trunk``
    AssemblyBranch(after_layer, model, sha256, layers=[])                   # dataclass; .params

``modelhub.ml.assembly.build``
    build_assembly(*, backbone, heads, export_dir, backbone_info, probe_inputs=None, verify=True,
                   per_head_signatures=False, trunk=None) -> dict
    variables_sha256(export_dir) -> str
    directory_bytes(path) -> int

``modelhub.ml.assembly.verify``
    verify_assembly(export_dir, backbone, heads, probe_inputs=None, *, rtol=VERIFY_TOLERANCE,
                    branches=None) -> dict

``modelhub.ml.export``  (ONNX via tf2onnx + onnxruntime; LiteRT via TFLiteConverter + ai_edge_litert)
    export_assembly(*, backbone, heads, trunk, saved_model_dir, fmt, quantization, out_path,
                    probe_inputs=None, dataset=None, progress=None, per_task_signatures=None) -> dict
    open_onnx_runner(path) -> OnnxRunner        # .run(inputs_by_name, task_id) -> (outputs, output_width)

The assembled SavedModel serves ``serving_default(inputs, task_id)`` returning
``{"outputs": float32 [None, max_width], "output_width": int32 [None]}`` plus one
signature per task slug, and ships ``assets/manifest.json``.
"""
