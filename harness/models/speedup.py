"""The model that predicts a layer's direct sparse and dense time on a profile: the fitted
model of the profile's latest sweep, or else the paper's model (with the host's calibration
and the paper's alpha where the profile has none). Pruning guidance and whole-network
predictions read it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.conv.layers import LayerShape
from harness.machine.profiles import Profile
from harness.models.fitted import FittedModel
from harness.models.paper import PaperModel
from harness.store.files import StoreError
from harness.store.runs import MODEL_FIT, read_model_fit


PAPER_ALPHA = 3.0  # the paper's Broadwell value, for a profile that has none


def _with_model_numbers(profile: Profile) -> tuple[Profile, str]:
    """The profile with what the paper's model needs: peak and bandwidth from the host's
    calibration when the profile has none, alpha from the paper when it has none."""
    note = ""
    if not profile.peak_sgemm_gflops or not profile.stream_gbps:
        from harness.machine.calibrate import calibrated_profile, calibration
        from harness.machine.hostinfo import detect_host
        from harness.kernels.native import host_kernels
        profile = calibrated_profile(profile, calibration(host_kernels(), detect_host(), 1))
        note += ", peak and bandwidth calibrated on this host"
    if profile.alpha is None:
        profile = dataclasses.replace(profile, alpha=PAPER_ALPHA)
        note += f", alpha {PAPER_ALPHA} (the paper's Broadwell value; run a sweep to fit)"
    return profile, note


class ModelSpeedup:
    """speedup(layer, sparsity) of whichever model guides the pruning."""

    def __init__(self, profile: Profile, results_root: Path = Path("results"), threads: int = 1,
                 fit_file: Path | None = None):
        self.threads = threads
        self.fitted, self.source = None, ""
        runs = [fit_file] if fit_file is not None and fit_file.exists() else sorted(
            results_root.glob(f"{profile.name}-*/{MODEL_FIT}"), key=lambda p: p.stat().st_mtime)
        for run in reversed(runs):  # the latest fit of this version
            try:
                fit = read_model_fit(run)
            except StoreError:
                continue  # a fit of another version (`spconv refit` redoes it)
            self.fitted = FittedModel.from_json(fit)
            self.source = f"fitted model of {run.parent}"
            return
        profile, note = _with_model_numbers(profile)
        self.paper = PaperModel(profile)
        self.source = f"paper model of profile {profile.name}{note}"

    def __call__(self, layer: LayerShape, sparsity: float) -> float:
        if self.fitted is not None:
            return self.fitted.speedup(layer.spec(1), sparsity, self.threads,
                                       (layer.key, 1, self.threads))
        return self.paper.speedup(layer, sparsity)

    def dense_time(self, layer: LayerShape) -> float:
        """Seconds per image of the best dense method."""
        if self.fitted is not None:
            return self.fitted.dense_time(layer.spec(1), (layer.key, 1, self.threads))
        return self.paper.times(layer, 0.0)[0]

    def sparse_time(self, layer: LayerShape, sparsity: float) -> float:
        """Seconds per image of direct sparse convolution at ``sparsity``."""
        if self.fitted is not None:
            return self.fitted.sparse_time(layer.spec(1), sparsity, self.threads)
        return max(self.paper.times(layer, sparsity)[1:])
