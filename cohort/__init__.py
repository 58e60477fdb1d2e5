"""Many patients at once, for analysts: read extracts, evaluate every patient, keep a record, summarise.

inputs (patient files, JSON Lines, CSV, Parquet -> validated patients, bad rows reported), decisions (one
row per patient, the documented columns), summary (counts over the cohort, streamed), runner (chunks on one
core, on every core, or on Dask), store (the DuckDB audit store, replay), report (HTML and figures),
compare (what a rule change would change). Imports are lazy: the command line pays only for what it uses.
"""
