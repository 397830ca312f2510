"""Long runs are never silent: a tqdm bar on a terminal, occasional plain lines when stderr is not one."""

from __future__ import annotations

from robustprune import progress


def test_heartbeat_prints_occasionally_when_not_a_terminal(monkeypatch, capsys) -> None:
    clock = iter(range(0, 1000, 3))  # every call to the clock advances 3 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: float(next(clock)))
    bar = progress.progress_bar(100, "train", "step", True)  # pytest's stderr is not a terminal
    assert isinstance(bar, progress.Heartbeat)
    for _ in range(100):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert 20 <= len(lines) <= 35  # one line per >= 10 s of a 300 s run, plus the last
    assert lines[-1].startswith("robustprune: train: 100/100 step (100 %)")


def test_disabled_progress_prints_nothing(capsys) -> None:
    bar = progress.progress_bar(10, "x", "ex", False)
    bar.update(10)
    bar.close()
    assert capsys.readouterr().err == ""
