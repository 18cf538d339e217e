"""The machine: instruction-set table, host detection, architecture profiles, the C kernel build,
BLAS control, caps that hold dense libraries to a profile's level, CPU claims, calibration."""
