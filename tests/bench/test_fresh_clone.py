"""bench/fresh_clone.py: what it reads from pytest's output and the demo's run folder."""

import json

import pytest


@pytest.fixture
def script(bench_script):
    return bench_script("fresh_clone")


def test_pytest_summary_takes_the_last_summary_line(script):
    log = "\n".join([
        "....s.F [ 50%]",
        "loaded 6 images in 2.5s",  # a line of a test's output: not the last such line
        "FAILED tests/x.py::test_y - assert 1 == 2",
        "1 failed, 1015 passed, 1 skipped, 3 warnings in 1432.07s (0:23:52)",
    ])  # fmt: skip
    assert script.pytest_summary(log) == {
        "failed": 1, "passed": 1015, "skipped": 1, "warnings": 3, "seconds": 1432.07,
    }  # fmt: skip
    assert script.pytest_summary("ruff: 2 errors\nmake: *** [lint] Error 1") == {}


def test_demo_result_reads_eval_and_the_last_training_second(script, tmp_path):
    assert script.demo_result(tmp_path) == {}
    (tmp_path / "eval.json").write_text(json.dumps({"mean_iu": 0.9, "pixel_acc": 0.97, "x": 1}))
    records = [{"iteration": 20, "seconds": 5.5}, {"iteration": 600, "seconds": 150.25},
               {"iteration": 600, "eval": {"mean_iu": 0.9}}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert script.demo_result(tmp_path) == {
        "mean_iu": 0.9,
        "pixel_acc": 0.97,
        "train_seconds": 150.25,
    }


def test_the_result_keeps_each_command_and_pytest_apart_and_the_clone_goes(
    script, tmp_path, monkeypatch
):
    def make(clone, target):  # what the commands leave behind, without running them
        if target == "demo":
            (clone / "runs" / "demo").mkdir(parents=True)
            (clone / "runs" / "demo" / "eval.json").write_text('{"mean_iu": 0.5, "pixel_acc": 0.8}')
        else:
            (clone / "test.log").write_text("3 passed in 2.50s\n")
        return {"returncode": 0, "seconds": {"demo": 7.0, "test": 9.0}[target]}

    monkeypatch.setattr(script, "make", make)
    out = tmp_path / "fresh.json"
    assert script.measure(out, beside=tmp_path) == 0
    result = json.loads(out.read_text())
    assert result["demo"] == {"returncode": 0, "seconds": 7.0, "mean_iu": 0.5, "pixel_acc": 0.8}
    assert result["test"] == {"returncode": 0, "seconds": 9.0,
                              "pytest": {"passed": 3, "seconds": 2.5}}  # fmt: skip
    assert len(result["commit"]) == 40
    assert [p.name for p in tmp_path.iterdir()] == ["fresh.json"]  # the clone removed


def test_a_failed_clone_is_one_line_and_leaves_no_folder(script, tmp_path, monkeypatch):
    not_a_repo = tmp_path / "not_a_repo"
    not_a_repo.mkdir()
    beside = tmp_path / "beside"
    beside.mkdir()
    monkeypatch.setattr(script, "REPO", not_a_repo)
    with pytest.raises(script.UserError, match=r"git clone .*not_a_repo.*: fatal: .+") as error:
        script.measure(tmp_path / "fresh.json", beside=beside)
    assert "\n" not in str(error.value)
    assert list(beside.iterdir()) == []
