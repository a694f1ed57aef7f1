"""Published and measured figures the cost model is compared against (package data).

``published.toml`` lists one row per compared number with its source and the model
configuration; ``h100_measurements.json`` is this repo's H100 calibration run;
``h200_calibration.json`` (and ``h200_calibration_run1.json``, an earlier run) are the
``sparq hardware calibrate`` measurements behind the calibrated ``h200-sxm`` profile (copies of
``docs/data/``). All are read by :mod:`costmodel.published`.
"""
