"""Published and measured figures the cost model is compared against (package data).

``published.toml`` lists one row per compared number with its source and the model
configuration; ``h100_measurements.json`` is this repo's H100 calibration run. Both are read by
:mod:`costmodel.published`.
"""
