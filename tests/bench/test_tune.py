"""Unit tests of the tuner's pure parts: the mix it is given and how it picks a candidate."""
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from perfbench import tune  # noqa: E402


def step(value, rps, low, high, p99=50.0, failed=0):
    return {"sweep_value": value, "rps": rps, "rps_min": low, "rps_max": high, "p99_ms": p99, "failed": failed}


class MixTest(unittest.TestCase):
    def test_weights_are_normalised_and_endpoints_get_their_default_query(self):
        mix = tune.parse_mix("/=2,/io-intensive?ms=20=1,/cached-data=1")
        self.assertEqual(mix, {"/": 0.5, "/io-intensive?ms=20": 0.25, "/cached-data?category=7": 0.25})

    def test_bad_items_are_refused(self):
        for bad in ("x=1", "/=0", "/", "/=a", "/=-1"):
            with self.assertRaises(ValueError, msg=bad):
                tune.parse_mix(bad)


class ChoiceTest(unittest.TestCase):
    def ranked(self, *steps):
        return sorted(((s, {"workers": s["sweep_value"]}) for s in steps),
                      key=lambda se: tune.score(se[0], 100), reverse=True)

    def test_cheaper_candidate_within_the_spread_wins(self):
        order = tune.cheapest_first(self.ranked(step(16, 2923, 2874, 2970), step(5, 2860, 2840, 2900),
                                                step(2, 1587, 1500, 1600)), 100, lambda e: e["workers"])
        self.assertEqual(order[0][0]["sweep_value"], 5)

    def test_a_clear_winner_stays(self):
        order = tune.cheapest_first(self.ranked(step(16, 3000, 2950, 3050), step(5, 2700, 2650, 2750)),
                                    100, lambda e: e["workers"])
        self.assertEqual(order[0][0]["sweep_value"], 16)

    def test_a_cheaper_candidate_over_the_target_is_not_taken(self):
        order = tune.cheapest_first(self.ranked(step(16, 2923, 2874, 2970), step(5, 2950, 2800, 3000, p99=150)),
                                    100, lambda e: e["workers"])
        self.assertEqual(order[0][0]["sweep_value"], 16)

    def test_meeting_the_target_beats_more_requests(self):
        self.assertGreater(tune.score(step(1, 100, 90, 110, p99=90), 100),
                           tune.score(step(2, 5000, 4900, 5100, p99=120), 100))


if __name__ == "__main__":
    unittest.main()
