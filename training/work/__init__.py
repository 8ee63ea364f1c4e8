"""Worker side of training: everything a Celery worker runs for datasets and jobs (never the web).

training/tasks.py stays thin and calls into these modules:

    jobs.py            job_run: claim a job, run it by kind, record succeeded / cancelled / failed
    progress.py        progress, metrics, log and heartbeat on the job row; cancel checks
    common.py          what the runners share: load inputs, build heads, store artifacts, finish
    forgetting.py      the parent's approved heads through the old and the new backbone
    train_head.py, train_heads.py, fine_tune.py, grow_backbone.py, evaluate_head.py: one per job kind
    datasets.py        dataset_validate (ready or rejected) and dataset_arrays (arrays for training)
    dataset_zips.py    dataset zips opened within the limits; .npz headers and arrays
    image_zips.py      image zips: sizes from headers, then decoded one image at a time
    tables.py          CSV, JSON Lines and Parquet read a row at a time within the limits
    table_columns.py   a table's columns as the data contract's arrays, by the `columns` mapping
    dataset_preview.py the stored preview (columns, first rows, label distribution) and the inputs' hash
"""
