"""The machine: instruction-set table, host detection, architecture profiles, the C kernel build, BLAS control and calibration."""
