"""Every file the tool reads back is validated: damage is one line naming the file (exit
status 2), or a recovery that keeps the damaged data under a new name and says so. Nothing
damaged is read as empty or overwritten, and no finished row is lost."""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import DAMAGED
from harness.cli.sweep import main as sweep
from harness.errors import HarnessError
from harness.machine import calibrate
from harness.machine.build import cache_root, host_kernels
from harness.machine.hostinfo import detect_host
from harness.store.files import StoreError, read_json, write_json
from harness.store.runs import RunStore
from harness.kernels.plans import TuningDB

TUNING = sorted(p.name for p in Path(DAMAGED).glob("tuning_*.json"))


@pytest.mark.parametrize("name", TUNING)
def test_damaged_tuning_database_is_named_and_never_overwritten(name, tmp_path):
    path = tmp_path / "tuning.json"
    shutil.copy(Path(DAMAGED) / name, path)
    before = path.read_bytes()
    db = TuningDB(path)
    with pytest.raises(StoreError, match=str(path)):
        db.check()
    with pytest.raises(StoreError, match=str(path)):
        db.put("key", __import__("harness.kernels.direct", fromlist=["DirectPlan"]).DirectPlan(
            2, 2, 2), {})
    assert path.read_bytes() == before


@pytest.fixture
def session_tuning_db():
    """The test session's tuning database, restored after the test."""
    path = cache_root() / "tuning.json"
    saved = path.read_bytes() if path.exists() else None
    yield path
    if saved is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(saved)


def test_sweep_stops_on_a_damaged_tuning_database(session_tuning_db, tiny_sweep, tmp_path,
                                                  capsys):
    shutil.copy(Path(DAMAGED) / "tuning_list.json", session_tuning_db)
    args = [a for a in tiny_sweep if a not in ("--tune", "off")]
    assert sweep([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(session_tuning_db) in err[0]
    assert not (tmp_path / "run" / "points.jsonl").exists()


@pytest.fixture
def fake_calibration(monkeypatch):
    """The cache logic of calibration() without the minutes of measuring."""
    calls = []

    def measured(built, host, threads, repeats=5):
        calls.append(threads)
        return {"fma_gflops_1": {"median": 100.0, "best": 100.0},
                "fma_gflops_all": {"median": 100.0 * threads, "best": 100.0 * threads},
                "roofs": {**{k: {} for k in calibrate.REQUIRED_ROOFS},
                          "padding": dict.fromkeys(calibrate.PAD_PATHS, {})},
                "threads": threads}
    monkeypatch.setattr(calibrate, "run_calibration", measured)
    monkeypatch.setattr(calibrate, "busy_reason", lambda threads: None)
    monkeypatch.setattr(calibrate, "drift_reason", lambda built, cached: None)
    return calls


@pytest.mark.parametrize("name", ["calibration_truncated.json", "calibration_not_utf8.json"])
def test_damaged_calibration_is_moved_aside_and_measured_again(name, fake_calibration,
                                                               tmp_path, capsys):
    built, host = host_kernels(), detect_host()
    path = calibrate.calibration_path(built, host, 1, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(DAMAGED) / name, path)
    damaged = path.read_bytes()
    result = calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    assert result["fma_gflops_1"]["median"] == 100.0 and fake_calibration == [1]
    kept = list(tmp_path.glob("*.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    assert str(path) in capsys.readouterr().err
    assert read_json(path, calibrate.SCHEMA, calibrate.VERSION)["threads"] == 1  # cached
    calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    assert fake_calibration == [1]  # read back, not measured again


def test_busy_calibration_is_not_cached_and_refresh_measures_again(fake_calibration, monkeypatch,
                                                                   tmp_path, capsys):
    built, host = host_kernels(), detect_host()
    monkeypatch.setattr(calibrate, "busy_reason", lambda threads: "CPU 0 90% busy")
    assert calibrate.calibration(built, host, 1, cache_dir=tmp_path)["busy"]
    assert not calibrate.calibration_path(built, host, 1, tmp_path).exists()
    assert "busy" in capsys.readouterr().err
    monkeypatch.setattr(calibrate, "busy_reason", lambda threads: None)
    calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    calibrate.calibration(built, host, 1, cache_dir=tmp_path, refresh=True)
    assert fake_calibration == [1, 1, 1]


def test_a_calibration_the_host_outruns_right_after_is_not_cached(fake_calibration, monkeypatch,
                                                                  tmp_path, capsys):
    built, host = host_kernels(), detect_host()
    rate = {"now": 150.0}  # the calibration measured 100: a busy minute the CPUs' probe missed
    monkeypatch.setattr(calibrate, "fma_peak",
                        lambda built, threads, repeats: {"median": rate["now"],
                                                         "best": rate["now"]})
    monkeypatch.setattr(calibrate, "drift_reason", DRIFT_REASON)
    monkeypatch.setattr(calibrate, "DRIFT_PAUSE_S", 0.0)
    busy = calibrate.calibration(built, host, 1, cache_dir=tmp_path)["busy"]
    assert busy == "the host's FMA rate is now 150 GFLOP/s, the calibration's 100"
    assert not calibrate.calibration_path(built, host, 1, tmp_path).exists()
    assert "not cached" in capsys.readouterr().err
    rate["now"] = 104.0  # within the drift share: kept
    assert calibrate.calibration(built, host, 1, cache_dir=tmp_path)["busy"] is None
    assert calibrate.calibration_path(built, host, 1, tmp_path).exists()


def test_a_calibration_whose_threads_shared_one_core_is_not_cached(fake_calibration,
                                                                   monkeypatch, tmp_path, capsys):
    """Two threads at one core's FMA rate (the second vCPU taken by the hypervisor) is no
    peak to keep: used for the run, not cached."""
    built, host = host_kernels(), detect_host()
    measured = calibrate.run_calibration

    def one_core(built, host, threads, repeats=5):
        cal = measured(built, host, threads, repeats)
        cal["fma_gflops_all"] = {"median": 99.0, "best": 101.0}
        return cal
    monkeypatch.setattr(calibrate, "allowed_cpus", lambda: [0, 1])
    monkeypatch.setattr(calibrate, "run_calibration", one_core)
    assert "1.01x one thread's" in calibrate.calibration(built, host, 2, cache_dir=tmp_path)["busy"]
    assert not calibrate.calibration_path(built, host, 2, tmp_path).exists()
    monkeypatch.setattr(calibrate, "run_calibration", measured)
    assert calibrate.calibration(built, host, 2, cache_dir=tmp_path)["busy"] is None
    assert calibrate.calibration_path(built, host, 2, tmp_path).exists()
    # one CPU to run on: two threads cannot scale, and that is no fault
    monkeypatch.setattr(calibrate, "allowed_cpus", lambda: [0])
    monkeypatch.setattr(calibrate, "run_calibration", one_core)
    assert calibrate.calibration(built, host, 2, cache_dir=tmp_path, refresh=True)["busy"] is None


def test_a_calibration_the_host_drifted_from_is_measured_again(fake_calibration, monkeypatch,
                                                                tmp_path, capsys):
    built, host = host_kernels(), detect_host()
    calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    rate = {"now": 103.0}  # the cached calibration's FMA rate is 100; the probe's best
    # sample counts, not a median that one slow sample pulls down
    monkeypatch.setattr(calibrate, "fma_peak",
                        lambda built, threads, repeats: {"median": 0.5 * rate["now"],
                                                         "best": rate["now"]})
    monkeypatch.setattr(calibrate, "drift_reason", DRIFT_REASON)
    calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    assert fake_calibration == [1]  # within DRIFT_SHARE: the cache serves
    rate["now"] = 80.0
    calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    assert fake_calibration == [1, 1]
    assert "FMA rate is now 80 GFLOP/s, the calibration's 100" in capsys.readouterr().err


def test_a_burst_of_load_through_one_drift_probe_is_no_drift(fake_calibration, monkeypatch,
                                                             tmp_path):
    built, host = host_kernels(), detect_host()
    calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    probes = iter([80.0, 99.0, 60.0])  # the first probe slowed by the neighbours, the second not
    seen = []

    def probe(built, threads, repeats):
        seen.append(next(probes))
        return {"median": seen[-1], "best": seen[-1]}

    monkeypatch.setattr(calibrate, "fma_peak", probe)
    monkeypatch.setattr(calibrate, "drift_reason", DRIFT_REASON)
    monkeypatch.setattr(calibrate, "DRIFT_PAUSE_S", 0.0)
    calibrate.calibration(built, host, 1, cache_dir=tmp_path)
    assert fake_calibration == [1] and seen == [80.0, 99.0]  # the cache serves


DRIFT_REASON = calibrate.drift_reason


@pytest.mark.parametrize("name", ["metadata_truncated.json", "metadata_wrong_schema.json"])
def test_run_with_damaged_metadata_resumes(name, tiny_sweep, tmp_path, capsys):
    out = tmp_path / "run"
    assert sweep([*tiny_sweep, "--out", str(out)]) == 0
    rows = len(pd.read_csv(out / "results.csv"))
    shutil.copy(Path(DAMAGED) / name, out / "metadata.json")
    capsys.readouterr()
    assert sweep([*tiny_sweep, "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"0 of {rows} points to measure" in err and "metadata.json" in err
    assert len(list(out.glob("metadata.json.damaged-*"))) == 1
    assert read_json(out / "metadata.json", "spconv.run-metadata", 1)["settings"]


def test_damaged_lines_of_points_are_set_aside_and_measured_again(tiny_sweep, tmp_path, capsys):
    out = tmp_path / "run"
    assert sweep([*tiny_sweep, "--out", str(out)]) == 0
    first = pd.read_csv(out / "results.csv")
    points = out / "points.jsonl"
    good = points.read_bytes()
    # damage: the corpus's bad lines, and one good row cut to garbage in the middle
    header, row, *rest = good.split(b"\n")
    bad = (Path(DAMAGED) / "points_bad_lines.txt").read_bytes()
    points.write_bytes(b"\n".join([header, row[: len(row) // 2], *rest[:-1]]) + b"\n" + bad)
    damaged = points.read_bytes()
    capsys.readouterr()
    assert sweep([*tiny_sweep, "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "damaged line(s) set aside" in err and "1 of" in err  # the cut row, measured again
    kept = list(out.glob("points.jsonl.damaged-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    second = pd.read_csv(out / "results.csv")
    assert sorted(second["key"]) == sorted(first["key"]) and (second["status"] == "ok").all()


def test_points_without_a_schema_header_are_refused(tmp_path):
    (tmp_path / "points.jsonl").write_text('{"key": "a"}\n')
    with pytest.raises(HarnessError, match="schema header on its first line"):
        RunStore(tmp_path).rows()


def test_report_and_refit_rebuild_a_damaged_results_table(tiny_sweep, tmp_path, capsys):
    from harness.cli import main as spconv
    out = tmp_path / "run"
    assert sweep([*tiny_sweep, "--out", str(out)]) == 0
    good = pd.read_csv(out / "results.csv")
    shutil.copy(Path(DAMAGED) / "results_damaged.csv", out / "results.csv")
    assert spconv(["report", str(out)]) == 0
    assert (out / "report.md").exists()
    shutil.copy(Path(DAMAGED) / "results_damaged.csv", out / "results.csv")
    assert spconv(["refit", str(out)]) == 0  # may warn that two points fit no model
    rebuilt = pd.read_csv(out / "results.csv")
    assert sorted(rebuilt["key"]) == sorted(good["key"])


def test_refit_refuses_another_profile_than_the_runs(tiny_sweep, tmp_path, capsys):
    """A fit of one profile's points to another build's calibration would be nonsense."""
    from harness.cli import main as spconv
    out = tmp_path / "run"
    assert sweep([*tiny_sweep, "--out", str(out)]) == 0
    capsys.readouterr()
    assert spconv(["refit", str(out), "--profile", "atom_c2750"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was measured with profile" in err[0]


def test_every_written_file_names_its_schema(tiny_sweep, tmp_path):
    out = tmp_path / "run"
    assert sweep([*tiny_sweep, "--out", str(out)]) == 0
    header = json.loads((out / "points.jsonl").read_text().splitlines()[0])
    assert header["schema"] == "spconv.points" and header["version"] >= 1
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["schema"] == "spconv.run-metadata" and "data" in meta


def test_store_write_is_atomic_and_versioned(tmp_path):
    path = tmp_path / "f.json"
    write_json(path, "kind", 3, {"a": 1})
    assert read_json(path, "kind", 3) == {"a": 1}
    with pytest.raises(StoreError, match="version 3"):
        read_json(path, "kind", 4)
    with pytest.raises(StoreError, match="not a other file"):
        read_json(path, "other", 3)
    assert not [p for p in os.listdir(tmp_path) if p != "f.json"]  # no temporary left
