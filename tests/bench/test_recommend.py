# Unit tests of the benchmark's recommendations (bench/perfbench/recommend.py), on hand-made steps.
"""Run: /usr/bin/python3 -m unittest discover tests/bench"""
import json
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from perfbench.recommend import recommend  # noqa: E402

BOUND = 250
CORES = 2


def step(cls, rps, p99, endpoint="/io-intensive", concurrency=64, spread=0.02, kind="matrix",
         cache="bypass", group=None, sweep_value=None, failed=0, workers=5, **settings):
    """A step with median `rps`, repetitions within ±spread of it, and `p99` ms."""
    name = f"{kind}/{group or ''}/{cls}/{endpoint}/c{concurrency}/{cache}/{sweep_value}"
    return {"id": name, "kind": kind, "group": group or kind, "class": cls, "baseline": None,
            "endpoint": endpoint, "path": endpoint, "concurrency": concurrency, "cache": cache,
            "rate": None, "sweep_value": sweep_value, "reps": 3,
            "settings": dict({"worker_class": cls, "workers": workers, "pool_size": 5,
                              "threads": 1}, **settings),
            "rps": rps, "rps_min": rps * (1 - spread), "rps_max": rps * (1 + spread),
            "p99_ms": p99, "requests": int(rps * 15), "failed": failed,
            "failed_by_kind": {"timeout": failed}, "cache_hit_ratio": None}


class EndpointRecommendation(unittest.TestCase):
    def only_entry(self, steps):
        entries = recommend(steps, BOUND, CORES)["endpoints"]
        self.assertEqual(len(entries), 1)
        return entries[0]

    def test_best_is_the_fastest_within_the_bound(self):
        entry = self.only_entry([step("sync", 900, 400), step("thread", 600, 200),
                                 step("event", 500, 120)])
        self.assertTrue(entry["within_bound"])
        self.assertEqual(entry["best"]["class"], "thread")  # sync is faster but over the bound
        self.assertEqual(entry["runner_up"]["class"], "event")
        self.assertEqual(entry["margin_pct"], 20.0)
        self.assertTrue(entry["significant"])
        self.assertIn("thread wins by 20.0%", entry["verdict"])

    def test_no_step_within_the_bound_takes_the_lowest_p99(self):
        entry = self.only_entry([step("sync", 900, 900), step("event", 300, 400)])
        self.assertFalse(entry["within_bound"])
        self.assertEqual(entry["best"]["class"], "event")
        self.assertIn("no step met the p99 bound", entry["verdict"])
        notes = recommend([step("sync", 900, 900)], BOUND, CORES)["notes"]
        self.assertTrue(any("met the p99 bound" in note for note in notes))

    def test_overlapping_repetitions_are_no_significant_difference(self):
        entry = self.only_entry([step("sync", 1000, 100, spread=0.05),
                                 step("event", 970, 100, spread=0.05)])
        self.assertEqual(entry["best"]["class"], "sync")
        self.assertFalse(entry["significant"])
        self.assertIn("no significant difference", entry["verdict"])

    def test_a_single_repetition_cannot_be_significant(self):
        steps = [dict(step("sync", 1000, 100, spread=0), reps=1),
                 dict(step("event", 500, 100, spread=0), reps=1)]
        entry = self.only_entry(steps)
        self.assertIsNone(entry["significant"])
        self.assertIn("a single repetition", entry["verdict"])

    def test_a_single_class_compares_with_its_next_configuration(self):
        entry = self.only_entry([step("url", 800, 100, concurrency=64),
                                 step("url", 500, 60, concurrency=16)])
        self.assertEqual(entry["best"]["concurrency"], 64)
        self.assertEqual(entry["runner_up"]["concurrency"], 16)
        self.assertEqual(entry["runner_up"]["class"], "url")
        self.assertEqual(entry["margin_pct"], 60.0)

    def test_steps_failing_too_often_are_not_candidates(self):
        entry = self.only_entry([step("sync", 2000, 100, failed=100), step("event", 500, 100)])
        self.assertEqual(entry["best"]["class"], "event")

    def test_cached_and_baseline_steps_are_not_candidates(self):
        baseline = dict(step(None, 9000, 5), kind="baseline", baseline="nginx-return-200")
        entry = self.only_entry([step("sync", 9000, 5, cache="on"), baseline,
                                 step("event", 500, 100)])
        self.assertEqual(entry["best"]["class"], "event")


class MissingGroups(unittest.TestCase):
    def test_a_run_without_sweeps_or_cache_has_no_such_sections(self):
        recs = recommend([step("sync", 500, 100), step("event", 700, 90)], BOUND, CORES)
        for absent in ("cache", "max_requests", "workers", "pool_size", "threads",
                       "worker_connections"):
            self.assertNotIn(absent, recs)
        self.assertEqual(len(recs["endpoints"]), 1)
        json.dumps(recs)  # it goes into results.json as it is

    def test_no_bound_and_no_core_count(self):
        steps = [step("sync", 500, 900), step("event", 700, 1000),
                 step("sync", 400, 900, kind="sweep", group="workers", sweep_value=5)]
        recs = recommend(steps, None, None)
        self.assertEqual(recs["endpoints"][0]["best"]["class"], "event")
        self.assertEqual(recs["workers"]["formulas"], {})

    def test_no_steps_at_all(self):
        self.assertEqual(recommend([], BOUND, CORES)["endpoints"], [])


class Cache(unittest.TestCase):
    def test_the_cache_paid_when_on_beats_bypass_beyond_the_spread(self):
        cold = dict(step("event", 3000, 40, endpoint="/", cache="on"), kind="cold_wave",
                    id="cold")
        recs = recommend([step("event", 10000, 14, endpoint="/"),
                          step("event", 35000, 4, endpoint="/", cache="on"), cold],
                         BOUND, CORES)
        (entry,) = recs["cache"]
        self.assertTrue(entry["paid"])
        self.assertEqual(entry["ratio"], 3.5)
        self.assertEqual(entry["p99_ratio"], 3.5)
        self.assertEqual(entry["cold_p99_ms"], 40)
        self.assertEqual(entry["cold_vs_warm_p99"], 10.0)
        self.assertIn("the cache paid", entry["verdict"])

    def test_the_cache_did_not_pay_within_the_spread(self):
        recs = recommend([step("sync", 1000, 14, endpoint="/", spread=0.05),
                          step("sync", 1030, 14, endpoint="/", cache="on", spread=0.05)],
                         BOUND, CORES)
        self.assertFalse(recs["cache"][0]["paid"])
        self.assertIn("did not pay", recs["cache"][0]["verdict"])


class Sweeps(unittest.TestCase):
    def sweep(self, group, values_rps, cls="sync", endpoint="/cpu-intensive", spread=0.02):
        return [step(cls, rps, 100, endpoint=endpoint, kind="sweep", group=group,
                     sweep_value=value, spread=spread, **{group: value})
                for value, rps in values_rps]

    def test_max_requests_cost_against_zero(self):
        recs = recommend(self.sweep("max_requests", [(0, 1000), (100, 880)]), BOUND, CORES)
        values = {v["max_requests"]: v for v in recs["max_requests"]["values"]}
        self.assertEqual(values[100]["cost_pct"], 12.0)
        self.assertTrue(values[100]["significant"])
        self.assertNotIn("cost_pct", values[0])
        self.assertIn("cost 12.0%", recs["max_requests"]["verdict"])

    def test_max_requests_within_the_spread_is_no_significant_difference(self):
        recs = recommend(self.sweep("max_requests", [(0, 1000), (1000, 990)], spread=0.03),
                         BOUND, CORES)
        self.assertFalse(recs["max_requests"]["values"][1]["significant"])
        self.assertIn("no significant difference", recs["max_requests"]["verdict"])

    def test_workers_sweep_judges_the_chapter_formulas(self):
        recs = recommend(self.sweep("workers", [(1, 200), (2, 400), (5, 380), (8, 300)]),
                         BOUND, CORES)
        self.assertEqual(recs["workers"]["formulas"], {"2*cores+1": 5, "cores*4": 8})
        (entry,) = recs["workers"]["per_endpoint"]
        self.assertEqual(entry["best_workers"], 2)
        self.assertEqual(entry["formula_pct"], {"2*cores+1": 95.0, "cores*4": 75.0})
        self.assertEqual(entry["formula_rps"]["cores*4"], 300)

    def test_a_formula_not_measured_is_said_so(self):
        recs = recommend(self.sweep("workers", [(1, 200), (2, 400)]), BOUND, CORES)
        entry = recs["workers"]["per_endpoint"][0]
        self.assertIsNone(entry["formula_rps"]["2*cores+1"])
        self.assertIn("was not measured", entry["verdict"])

    def test_pool_size_sweep(self):
        recs = recommend(self.sweep("pool_size", [(1, 100), (5, 450), (10, 460)],
                                    cls="event", endpoint="/io-intensive"), BOUND, CORES)
        (entry,) = recs["pool_size"]["per_endpoint"]
        self.assertEqual(entry["best_pool_size"], 10)
        self.assertIn("no significant difference with pool size 5", entry["verdict"])


if __name__ == "__main__":
    unittest.main()
