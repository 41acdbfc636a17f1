"""Published results name the commit that produced them, and the code that ran is that commit's."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from jaxdeid import results

RESULTS = Path(__file__).resolve().parent.parent / "results"
# A commit that is not a clean, verified one: no published result may say it.
UNPUBLISHABLE = re.compile(r"unknown|\+dirty|\+mismatch|\+unverified")
# Files measured before commits were recorded on the GPU machine, kept until a GPU session
# regenerates them (Table 1: the four recognizers and the fifth, trained on an H200).
AWAITING_REGENERATION = {"table1.json", "table1_details.json", "table1.md"}


def _published():
    for path in sorted(RESULTS.rglob("*")):
        if path.suffix in (".json", ".md") and not path.name.endswith("_raw.json") and path.name not in (
                "history.jsonl", "bands.json", "bench_bands.json") and path.name not in AWAITING_REGENERATION:
            yield path


def _commits(path: Path) -> list[str]:
    text = path.read_text()
    if path.suffix == ".json":
        return re.findall(r'"git_commit": "([^"]*)"', text)
    return re.findall(r"commit `([^`]*)`", text)


@pytest.mark.parametrize("path", list(_published()), ids=lambda p: str(p.relative_to(RESULTS)))
def test_no_published_result_names_an_unknown_or_dirty_commit(path):
    bad = [c for c in _commits(path) if UNPUBLISHABLE.search(c)]
    assert not bad, f"{path}: commit(s) {bad}: regenerate it from a clean checkout"


def test_the_shipped_commit_is_checked_against_the_code_that_runs(tmp_path, monkeypatch):
    (tmp_path / "jaxdeid").mkdir()
    (tmp_path / "jaxdeid" / "a.py").write_text("x = 1\n")
    digest = results.source_digest(tmp_path)
    monkeypatch.setenv("JAXDEID_GIT_COMMIT", "c0ffee")
    monkeypatch.delenv("JAXDEID_SOURCE_SHA256", raising=False)
    assert results.git_commit(tmp_path) == "c0ffee+unverified"
    monkeypatch.setenv("JAXDEID_SOURCE_SHA256", digest)
    assert results.git_commit(tmp_path) == "c0ffee"
    (tmp_path / "jaxdeid" / "a.py").write_text("x = 2\n")     # the copy that runs is not that commit
    assert results.git_commit(tmp_path) == "c0ffee+mismatch"
    assert os.environ["JAXDEID_GIT_COMMIT"] == "c0ffee"


def test_every_result_json_lands_in_the_history(tmp_path):
    prov = results.provenance("smoke", 0, 1.0)
    results.write_json(tmp_path / "a.json", {"x": 1, "provenance": prov})
    results.write_json(tmp_path / "b.json", {"x": 2, "provenance": prov})
    lines = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == ["a.json", "b.json"]


def test_the_recorded_command_names_package_modules_by_module():
    """A reproduce module run with ``python -m`` is recorded as such, not by the checkout's path."""
    from pathlib import Path

    import jaxdeid

    package = Path(jaxdeid.__file__).resolve().parent
    assert results.command_line([str(package / "reproduce" / "light.py"), "--preset", "small"]).endswith(
        "-m jaxdeid.reproduce.light --preset small")
    assert results.command_line([str(package / "__main__.py"), "train", "gan"]).endswith("-m jaxdeid train gan")
    assert results.command_line(["benchmarks/report.py", "raw.json"]).endswith("benchmarks/report.py raw.json")
