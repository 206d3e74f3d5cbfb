"""Finding the NAB corpus: a missing corpus is a skip on a developer's machine and a
failure under ``CI=true``, with a message naming where it looked and how to point at it.

The corpus tests of ``test_scorer.py`` and ``test_run.py`` get their corpus
through :func:`benchmarks.nab.corpus.require_corpus`; these cases call it with
a corpus that is not there (``pytest.fail`` / ``pytest.skip`` raise their
outcome exceptions, caught here).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.nab import corpus, reference, run


def _fake_corpus(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    for name in corpus.REQUIRED_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    return root


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_a_missing_corpus_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    missing = tmp_path / "no-nab-here"
    monkeypatch.setenv(corpus.CORPUS_ENV, str(missing))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception) as failed:
        corpus.require_corpus()
    message = str(failed.value)
    assert "under CI=true" in message
    assert f"NAB corpus not found: {missing} lacks data/, labels/combined_windows.json" in message
    assert "set THERMOWATCH_NAB_DATA" in message and "shared/data/nab" in message


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_a_missing_corpus_is_a_skip_outside_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    missing = tmp_path / "no-nab-here"
    monkeypatch.setenv(corpus.CORPUS_ENV, str(missing))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        corpus.require_corpus()
    assert f"NAB corpus not found: {missing} lacks data/" in str(skipped.value)
    assert "set THERMOWATCH_NAB_DATA" in str(skipped.value)


def test_a_partial_corpus_names_the_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _fake_corpus(tmp_path / "nab")
    (root / "config" / "thresholds.json").unlink()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        corpus.require_corpus(root)
    assert f"{root} lacks config/thresholds.json (" in str(failed.value)


def test_a_complete_corpus_is_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_corpus(tmp_path / "nab")
    monkeypatch.setenv(corpus.CORPUS_ENV, str(root))
    monkeypatch.setenv("CI", "true")
    assert corpus.corpus_problem() is None
    assert corpus.require_corpus() == root


def test_without_the_variable_it_looks_beside_the_checkout_and_above(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI clones the repository into a folder of its own with shared/ beside it.
    monkeypatch.delenv(corpus.CORPUS_ENV, raising=False)
    checkout = Path(corpus.__file__).resolve().parents[2]
    roots = corpus.candidate_roots()
    assert roots[0] == checkout.parent / "shared" / "data" / "nab"
    assert roots[1:] == [p / "shared" / "data" / "nab" for p in checkout.parents[1:]]
    monkeypatch.setattr(corpus, "_CHECKOUT", tmp_path / "ci" / "clone" / "repo")
    found = _fake_corpus(tmp_path / "ci" / "shared" / "data" / "nab")
    assert corpus.default_root() == found
    monkeypatch.setenv("CI", "true")
    assert corpus.require_corpus() == found
    # Found nowhere: every place looked is named.
    monkeypatch.setattr(corpus, "_CHECKOUT", tmp_path / "elsewhere" / "repo")
    with pytest.raises(pytest.fail.Exception) as failed:
        corpus.require_corpus()
    assert f"{tmp_path / 'shared' / 'data' / 'nab'} lacks data/" in str(failed.value)
    assert f"{tmp_path / 'elsewhere' / 'shared' / 'data' / 'nab'} lacks" in str(failed.value)


@pytest.mark.parametrize("main", [run.main, reference.main], ids=["run", "reference"])
def test_the_commands_name_a_missing_corpus(tmp_path: Path, main: Callable[..., int]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--data", str(tmp_path / "none")])
    message = str(exited.value.code)
    assert f": error: NAB corpus not found: {tmp_path / 'none'} lacks data/" in message
    assert "set THERMOWATCH_NAB_DATA" in message and "--data DIR" in message
