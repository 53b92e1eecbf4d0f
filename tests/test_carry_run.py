"""bench/carry_run.py: a run carried to a new machine as its adapters, merged again into the same weights."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import load_bench


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_run")
def test_a_packed_run_unpacks_to_the_same_weights_and_resumes_without_training(tiny_run, tmp_path):
    from safetensors.torch import load_file

    config, whole = tiny_run
    carry, archive, moved = load_bench("carry_run"), tmp_path / "run.tar.gz", tmp_path / "moved"
    carry.pack(whole, archive)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "run/03_sft/adapter/adapter_model.safetensors" in names and "run/03_sft/model/config.json" in names
    assert not [n for n in names if "/trainer/" in n or ("/model/" in n and n.endswith(".safetensors"))]

    merged = carry.unpack(archive, moved)
    assert not (tmp_path / ".moved.unpacking").exists()
    # Each adapter merged into the start model or into a stage of the moved run, never the original run's.
    assert [str(adapter.relative_to(moved)) for adapter, _ in merged] == [
        "03_sft/adapter", "04_iter1/adapter", "05_iter2/adapter"]
    starts = json.loads((whole / "03_sft" / "model" / "exspin_training.json").read_text())["base_model"]
    assert all(base == starts or Path(base).is_relative_to(moved) for _, base in merged)
    # Iteration 2's adapter was trained on iteration 1's merged model (or SFT's), inside the run folder: merged
    # in order, each into the weights its stage saved.
    for stage in ("03_sft", "04_iter1", "05_iter2"):
        [saved] = (whole / stage / "model").glob("*.safetensors")
        [rebuilt] = (moved / stage / "model").glob("*.safetensors")
        before, after = load_file(saved), load_file(rebuilt)
        assert before.keys() == after.keys()
        assert all(before[k].dtype == after[k].dtype and before[k].equal(after[k]) for k in before), stage
    with pytest.raises(SystemExit, match="exists"):
        carry.unpack(archive, moved)

    untouched = {path: path.stat().st_mtime_ns for path in [*moved.glob("*/done.json"), *moved.glob("*/model/*")]}
    result = subprocess.run([sys.executable, "-m", "exspin.cli", "run", str(config), f"run_dir={moved}", "--resume"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in untouched} == untouched  # no stage ran again
    metrics = json.loads((moved / "report" / "metrics.json").read_text())
    original = json.loads((whole / "report" / "metrics.json").read_text())
    assert {k: v["eval_ex"] for k, v in metrics["stages"].items()} == {
        k: v["eval_ex"] for k, v in original["stages"].items()}


def test_archives_that_would_write_outside_their_run_are_refused(tmp_path):
    carry = load_bench("carry_run")
    for names, fragment in ((["run/config.json", "run/../../evil"], "outside its run"),
                            (["run/config.json", "other/config.json"], "more than one run"), ([], "is empty")):
        archive = tmp_path / "bad.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for name in names:
                (tmp_path / "file").write_text("{}")
                tar.add(tmp_path / "file", arcname=name)
        with pytest.raises(SystemExit, match=fragment):
            carry.unpack(archive, tmp_path / "moved")
        assert not (tmp_path / "moved").exists() and not (tmp_path / ".moved.unpacking").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_run")
def test_a_branch_packs_without_its_base_and_unpacks_onto_it(tiny_run, tmp_path):
    """A branch (hard links to the base's data, prompts, start and SFT) packs only what is its own; unpacked
    with --base, its stage is merged onto the base's SFT model as it was, and the base's files stay as they were."""
    import shutil

    from safetensors.torch import load_file

    from exspin.run_folder import branch_run

    _, whole = tiny_run
    carry, branch, archive = load_bench("carry_run"), tmp_path / "branch", tmp_path / "branch.tar.gz"
    branch_run(whole, branch, ("start", "sft"))
    shutil.copytree(whole / "04_iter1", branch / "04_iter1")  # the branch's own stage (a copy: not the base's)
    shutil.copy(whole / "config.json", branch / "config.json")
    carry.pack(branch, archive, base=whole)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "branch/04_iter1/adapter/adapter_model.safetensors" in names
    assert not [n for n in names if n.startswith(("branch/00_data", "branch/01_prompts", "branch/03_sft"))]
    base_files = {p: p.read_bytes() for p in (whole / "03_sft").rglob("*.json")}

    other = tmp_path / "other"  # a run without the SFT stage the branch shared: not its base
    branch_run(whole, other, ("start",))
    with pytest.raises(SystemExit, match="not the run"):
        carry.unpack(archive, tmp_path / "wrong", base_run=other)
    assert not (tmp_path / "wrong").exists() and not (tmp_path / ".wrong.unpacking").exists()
    moved = tmp_path / "moved"
    [(adapter, base)] = carry.unpack(archive, moved, base_run=whole)
    assert adapter == moved / "04_iter1" / "adapter"
    [saved] = (whole / "04_iter1" / "model").glob("*.safetensors")
    [rebuilt] = (moved / "04_iter1" / "model").glob("*.safetensors")
    before, after = load_file(saved), load_file(rebuilt)
    assert all(before[k].equal(after[k]) for k in before)
    assert (moved / "03_sft" / "done.json").is_file() and (moved / "00_data").is_dir()
    assert {p: p.read_bytes() for p in base_files} == base_files
