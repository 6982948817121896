# Unit tests of the benchmark's report writer and of the checker's schema part, on the fixture and on sparse runs.
"""Run: /usr/bin/python3 -m unittest discover tests/bench (needs Debian's python3-matplotlib)."""
import copy
import json
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "bench"))
from check_report import referenced_charts, schema_problems  # noqa: E402
from perfbench.recommend import recommend  # noqa: E402
from perfbench.report import write_report  # noqa: E402

FIXTURE = json.loads((HERE / "fixture_results.json").read_text())


def with_recommendations(results):
    results = copy.deepcopy(results)
    results["recommendations"] = recommend(results["steps"],
                                           results["run"]["plan"]["p99_bound_ms"],
                                           results["machine"]["cores"])
    return results


def sparse_run():
    """A --url run cut short: one class, one concurrency, no sweeps, baselines or resources,
    and figures the engine could not measure left null."""
    results = copy.deepcopy(FIXTURE)
    results["run"].update(target="url", profile="custom", interrupted=True)
    steps = [s for s in results["steps"] if s["kind"] == "matrix" and s["cache"] == "bypass"
             and s["class"] == "event" and s["concurrency"] == 64]
    for step in steps:
        step.update({"class": "url", "settings": {}, "resources": {}, "metrics_delta": {}})
    steps[0].update(p99_ms=None, rps_min=None, rps_max=None, p50_ms=None)
    results["steps"] = steps
    results["rows"] = [r for r in results["rows"] if r["step_id"] in {s["id"] for s in steps}]
    return results


class Report(unittest.TestCase):
    def write(self, results):
        scratch = tempfile.TemporaryDirectory(prefix="test-report-")
        self.addCleanup(scratch.cleanup)
        out = Path(scratch.name)
        write_report(results, out)
        return out, (out / "report.md").read_text(), (out / "report.html").read_text()

    def test_the_fixture_gets_every_chart(self):
        out, markdown, page = self.write(with_recommendations(FIXTURE))
        charts = referenced_charts(markdown)
        self.assertEqual(len(charts), 9)
        for chart in charts:
            self.assertEqual((out / chart).read_bytes()[:4], b"\x89PNG")
        self.assertEqual(page.count("<img "), len(charts))
        self.assertEqual(page.count("data:image/png;base64,"), len(charts))
        self.assertNotIn("could not be drawn", markdown)
        for endpoint in ("/", "/cpu-intensive", "/io-intensive", "/mixed"):
            self.assertIn(f"`{endpoint}`", markdown)
        self.assertNotIn("http", page.replace("http://127.0.0.1:18080", ""))  # self-contained

    def test_a_sparse_run_draws_only_what_exists(self):
        out, markdown, _ = self.write(with_recommendations(sparse_run()))
        self.assertEqual(referenced_charts(markdown),
                         ["charts/latency_percentiles.png", "charts/rps_by_class.png"])
        self.assertNotIn("could not be drawn", markdown)
        self.assertIn("The run was interrupted", markdown)

    def test_no_steps_and_no_recommendations(self):
        results = copy.deepcopy(FIXTURE)
        results.update(steps=[], rows=[], recommendations={})
        _, markdown, _ = self.write(results)
        self.assertEqual(referenced_charts(markdown), [])


class Schema(unittest.TestCase):
    def test_the_fixture_follows_the_schema(self):
        self.assertEqual(schema_problems(with_recommendations(FIXTURE)), [])

    def test_a_negative_figure_or_an_orphan_row_is_caught(self):
        results = with_recommendations(FIXTURE)
        results["steps"][0]["p99_ms"] = -1
        results["rows"][0]["step_id"] = "nowhere"
        problems = " ".join(schema_problems(results))
        self.assertIn("p99_ms = -1", problems)
        self.assertIn("'nowhere' is not a step", problems)

    def test_missing_parts_are_caught(self):
        results = with_recommendations(FIXTURE)
        del results["machine"]["versions"]
        results["rows"] = []
        problems = " ".join(schema_problems(results))
        self.assertIn("machine.versions", problems)
        self.assertIn("rows is empty", problems)


if __name__ == "__main__":
    unittest.main()
