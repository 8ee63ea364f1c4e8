"""ModelHub's TensorFlow/Keras core: pure functions over arrays, files and Keras models.

Nothing here imports Django; submodules import TensorFlow, this package file does not.
Every deliberate failure is a subclass of :class:`modelhub.ml.errors.MLError`.

Public API (keyword-only where marked ``*``):

``modelhub.ml.untrusted``  (the one reader of uploaded model bytes; no TensorFlow)
    Limits(max_bytes, max_members, max_uncompressed_bytes, max_config_bytes, max_config_depth,
           max_layers, max_config_objects, max_datasets, max_declared_bytes, max_h5_depth)
    UntrustedKerasFile(path, *, limits=None, weights=True)   # zip, config, HDF5 checked on open
        .config, .datasets, .read_dataset(path), .iter_datasets(prefix), .check_values(), .info()
    check_zip_members(infos, *, what, max_members, max_unpacked) -> int   # also for dataset zips
    read_config(path, *, limits=None) -> dict

``modelhub.ml.safe_load``
    check_keras_archive(path, **limits) -> dict              # every check + layout + finite weights
    load_keras_model(path, **limits) -> keras.Model          # safe_mode=True, compile=False

``modelhub.ml.inspect``
    inspect_model(model, *, feature_layer=None) -> dict      # inputs, feature shape, params, layers
    weights_fingerprint(model) -> str                        # sha256 over names, shapes, bytes
    backbone_up_to(model, feature_layer, *, copy=False) -> keras.Model

``modelhub.ml.split``
    extract_head(full_model, backbone, *, feature_layer=None, probe_inputs=None,
                 atol=1e-6, name="head") -> keras.Model
    backbone_from_models(models, feature_layer, *, copy=True) -> keras.Model
    check_weights_identical(pairs, *, context) -> None
    check_head_compatible(head, feature_shape, *, backbone_label="backbone") -> None

``modelhub.ml.grow``
    grow_model(model, *, kind, after=None, layer=None, units=None, train="new",
               probe_inputs=None, rtol=1e-5, seed=0) -> GrowthResult
    kinds: "dense_identity", "conv_identity", "residual", "widen"

``modelhub.ml.freeze``
    freeze_backbone(model) -> dict
    unfreeze_top(model, num_layers) -> dict                  # counts weight-bearing layers only

``modelhub.ml.features``
    dataset_sha256(x) -> str
    compute_features(backbone, x, *, batch_size=64) -> np.ndarray
    cached_features(backbone, x, *, cache_dir, batch_size=64) -> tuple[np.ndarray, dict]

``modelhub.ml.train``
    build_head(feature_shape, *, units, kind="dense", activation="softmax",
               hidden_units=(), dropout=0.0, name="head", seed=None) -> keras.Model
    feature_shape(backbone) -> tuple[int, ...]
    train_head(*, backbone, head, x, y, epochs, ..., validation_data=None,
               early_stopping_patience=None) -> dict
    train_heads(*, backbone, heads, ys, x, mode="joint"|"disjoint", ...) -> dict
    fine_tune(*, backbone, head, x, y, ...) -> dict          # returns the new backbone
    train_grown_backbone(*, backbone, x, y, num_classes, epochs, ...) -> dict
    evaluate_head(backbone, head, x, y, *, batch_size=64) -> dict
    evaluate_head_outputs(backbone, head, x, y, *, batch_size=64, cache_dir=None) -> (dict, np.ndarray)
    head_validation_metrics(head, features, y) -> dict       # val_loss, val_accuracy | val_mae
    make_trainable(model) -> None

``modelhub.ml.callbacks``
    ProgressAndCancel(epochs, progress, should_cancel)       # keras.callbacks.Callback
    early_stopping(patience) -> keras.callbacks.EarlyStopping  # on val_loss

``modelhub.ml.assemble``
    AssemblyHead(task, model, version, sha256, labels=None)  # dataclass
    build_assembly(*, backbone, heads, export_dir, backbone_info, probe_inputs=None,
                   verify=True) -> dict
    verify_assembly(export_dir, backbone, heads, probe_inputs=None, *, atol=1e-5) -> dict
    variables_sha256(export_dir) -> str

The assembled SavedModel serves ``serving_default(inputs, task_id)`` returning
``{"outputs": float32 [None, max_width], "output_width": int32 [None]}`` plus one
signature per task slug, and ships ``assets/manifest.json``.
"""
