# Unit tests of the report's Targets section: the baselines each target is shown beside.
"""Run: /usr/bin/python3 -m unittest discover tests/bench."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "bench"))
from perfbench.report_targets import (MET, NOT_MET, cold_wave_lines, high_concurrency_lines, idle_lines,  # noqa: E402
                                      memory_lines)
from perfbench.results import percentile  # noqa: E402


def step(kind, endpoint, concurrency, rps, cls=None, baseline=None, **more):
    return {"kind": kind, "endpoint": endpoint, "path": endpoint, "concurrency": concurrency, "rps": rps,
            "class": cls, "baseline": baseline, "cache": "bypass", "reps": 1, **more}


class MemoryTarget(unittest.TestCase):
    def test_both_baselines_beside_the_figure(self):
        steps = [step("matrix", "/memory-test", 64, 2000, cls="sync", rss_return_kb=0),
                 step("baseline", "/memory-test", 64, 2500, baseline="memory-fresh"),
                 step("baseline", "/memory-test", 64, 8000, baseline="memory-reuse")]
        figure, rss = memory_lines(steps, 64)
        self.assertIn("0.80x the fresh-block baseline's 2,500", figure[1])
        self.assertIn("0.25x the kept-block baseline's 8,000", figure[1])
        self.assertEqual(figure[3], NOT_MET)  # the goal is the peer's figure, not a baseline's
        self.assertEqual(rss[3], MET)

    def test_a_missing_baseline_is_left_out(self):
        steps = [step("matrix", "/memory-test", 64, 2300, cls="event", rss_return_kb=0)]
        figure, _ = memory_lines(steps, 64)
        self.assertNotIn("baseline", figure[1])
        self.assertEqual(figure[3], MET)


class HighConcurrencyTarget(unittest.TestCase):
    def test_the_bare_responders_own_ratio_is_shown(self):
        steps = [step("matrix", "/", 2000, 20000, cls="event", failed_by_kind={}, p99_ms=180),
                 step("matrix", "/", 64, 30000, cls="event"),
                 step("baseline", "/", 2000, 16000, baseline="nonblocking-fcgi"),
                 step("baseline", "/", 64, 32000, baseline="nonblocking-fcgi")]
        (line,) = high_concurrency_lines(steps, 64)
        self.assertIn("0.67x", line[1])
        self.assertIn("the bare responder's own: 0.50x", line[1])
        self.assertNotIn("minimal Nginx", line[1])  # a run without the front steps
        self.assertEqual(line[3], NOT_MET)

    def test_perfcgi_behind_the_minimal_nginx_is_shown(self):
        steps = [step("matrix", "/", 2000, 18000, cls="event", failed_by_kind={}, p99_ms=180),
                 step("matrix", "/", 64, 30000, cls="event"),
                 step("front", "/", 2000, 24000, cls="event", front="minimal"),
                 step("front", "/", 64, 30000, cls="event", front="minimal"),
                 step("front", "/", 2000, 9000, cls="sync", front="minimal"),
                 step("baseline", "/", 2000, 16000, baseline="nonblocking-fcgi"),
                 step("baseline", "/", 64, 20000, baseline="nonblocking-fcgi")]
        (line,) = high_concurrency_lines(steps, 64)
        self.assertIn("0.60x", line[1])
        self.assertIn("behind the minimal Nginx: 0.80x (24,000 req/s, 1.50x the bare responder's); "
                      "the bare responder's own: 0.80x", line[1])


class IdleTarget(unittest.TestCase):
    def entry(self, **more):
        return {"class": "sync", "workers": 4, "workers_with_both_backends": 4,
                "idle_worker_rss_kb": {"median": 3900, "max": 4000}, **more}

    def test_pss_and_private_memory_beside_rss(self):
        (line,) = idle_lines([self.entry(idle_worker_pss_kb=1300, idle_worker_private_kb=600)])
        self.assertIn("max 4,000 KiB", line[1])
        self.assertIn("Pss median 1,300 KiB, private median 600 KiB", line[1])
        self.assertEqual(line[3], MET)  # judged on RSS, the measure

    def test_an_older_run_without_them_shows_rss_only(self):
        (line,) = idle_lines([self.entry(idle_worker_rss_kb={"median": 5000, "max": 6000})])
        self.assertNotIn("Pss", line[1])
        self.assertEqual(line[3], NOT_MET)


class ColdWaveTarget(unittest.TestCase):
    def wave(self, **more):
        return step("cold_wave", "/cached-data", 64, 30000, cls="event", cache="on", sweep_value="created", **more)

    def test_the_warm_and_nginx_figures_beside_the_clients(self):
        (line,) = cold_wave_lines([self.wave(p99_ms=80.0, nginx_p99_ms=3.0, warm_p99_ms=12.0)], 64)
        self.assertEqual(line[1], "80.0 ms (warm, the same second: 12.0 ms; in Nginx's log: 3.0 ms)")
        self.assertEqual(line[3], NOT_MET)  # judged on the client's figure
        (line,) = cold_wave_lines([self.wave(p99_ms=20.0, nginx_p99_ms=0.0)], 64)
        self.assertEqual(line[1], "20.0 ms (in Nginx's log: under 1 ms)")
        self.assertEqual(line[3], MET)

    def test_an_older_run_shows_the_clients_figure_alone(self):
        (line,) = cold_wave_lines([self.wave(p99_ms=30.0)], 64)
        self.assertEqual(line[1], "30.0 ms")
        self.assertEqual(line[3], MET)


class Percentile(unittest.TestCase):
    def test_nearest_rank(self):
        self.assertEqual(percentile(range(1, 101), 99), 99)
        self.assertEqual(percentile([5.0, 1.0], 99), 5.0)
        self.assertIsNone(percentile([], 99))


if __name__ == "__main__":
    unittest.main()
