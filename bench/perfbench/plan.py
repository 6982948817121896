"""bench/perfbench/plan.py: what a run measures. A plan is a list of phases; a phase is
one configuration of the target (perfcgi's settings, the baselines, or a --url server
as it is) and the steps measured under it. Repetitions are rounds over the whole plan, so
the sides of every comparison alternate (A B C, A B C, A B C) instead of running back to
back, and a drift of the machine spreads over all of them."""
import os
from dataclasses import dataclass, field

# The requests each endpoint gets: SPEC.md's defaults, spelled out.
PATHS = {
    "/": "/",
    "/cpu-intensive": "/cpu-intensive?n=50000",
    "/io-intensive": "/io-intensive?ms=100",
    "/mixed": "/mixed?n=20000&ms=50",
    "/cached-data": "/cached-data?category=7",
    "/expensive-computation": "/expensive-computation?n=30&method=naive",
    "/memory-test": "/memory-test?mb=10",
    "/async-request": "/async-request?ms=100",
}
CLASSES = ("sync", "thread", "event")
CACHEABLE = ("/", "/cached-data", "/expensive-computation")  # Cache-Control: public
COLD_WAVE_CATEGORY = 7
MIX_ENDPOINT = "mix"


@dataclass
class Step:
    kind: str                 # matrix (cache bypassed or on) | front | cold_wave | sweep | baseline | openloop | tune
    endpoint: str
    concurrency: int
    cls: str = None
    baseline: str = None
    group: str = None         # sweeps: the parameter; otherwise the kind
    cache: str = "bypass"     # bypass (X-No-Cache: 1) | on
    sweep_value: object = None
    rate_fraction: float = None  # openloop: of the closed-loop req/s of the same class and endpoint
    path: str = None
    mix: dict = None          # tune: {path: weight}
    front: str = None         # the Nginx in front: stack (its own) | minimal (the baselines'); --url: None

    def __post_init__(self):
        self.group = self.group or self.kind
        if self.path is None:
            self.path = PATHS.get(self.endpoint, self.endpoint)
        if self.front is None and self.cls != "url":
            self.front = "minimal" if self.baseline else "stack"

    @property
    def id(self):
        who = self.cls or self.baseline or "url"
        parts = [self.kind, who, self.endpoint, f"c{self.concurrency}", self.cache]
        if self.sweep_value is not None:
            parts.append(f"{self.group}={self.sweep_value}")
        if self.rate_fraction is not None:
            parts.append(f"rate{round(self.rate_fraction * 100)}pct")
        if self.front == "minimal" and not self.baseline:
            parts.append("front=minimal")
        return "/".join(parts)


@dataclass
class Phase:
    target: str               # stack | baseline | url
    settings: dict = field(default_factory=dict)  # perfcgi settings given (the rest default)
    steps: list = field(default_factory=list)
    label: str = ""
    idle_probe: bool = False  # after its steps: each idle worker's resident memory (runner.py)


@dataclass
class Profile:
    name: str
    warmup_s: float
    duration_s: float
    reps: int
    max_minutes: float
    classes: tuple = CLASSES
    endpoints: tuple = tuple(PATHS)
    concurrency: tuple = (64,)
    reference: int = 64            # the level the headline, the cache and open-loop steps use
    wide_endpoints: tuple = ()      # also measured at every level of `concurrency`
    extreme: tuple = ()             # (concurrency, endpoints) measured once more, high
    cache_on: bool = True
    cold_wave: tuple = ("created", "expired")  # the first second of an entry's life, or after it expired
    baselines: bool = True
    # perfcgi's `/` also measured behind the baselines' minimal Nginx, next to the same
    # step behind the stack's (needs the baselines)
    front_classes: tuple = ("sync", "event")
    sweeps: dict = field(default_factory=dict)  # group -> (class, values, endpoints, concurrency)
    openloop: dict = field(default_factory=dict)  # endpoint -> fractions
    openloop_classes: tuple = CLASSES


def cores():
    return os.cpu_count() or 1


def profiles():
    c = cores()
    workers = sorted({1, c, 2 * c + 1, 4 * c, 8 * c})
    return {
        "quick": Profile(
            "quick", warmup_s=1, duration_s=1, reps=1, max_minutes=5,
            endpoints=("/", "/cpu-intensive", "/io-intensive", "/cached-data", "/memory-test"),
            sweeps={"workers": ("sync", (c, 2 * c + 1), ("/cpu-intensive",), 64),
                    "threads": ("thread", (4, 16), ("/io-intensive",), 64),
                    "pool_size": ("event", (2, 8), ("/io-intensive",), 64),
                    "max_requests": ("sync", (0, 100), ("/",), 64),
                    "worker_connections": ("event", (64, 256), ("/",), 256)},
            cold_wave=("created",), openloop={"/io-intensive": (0.5,)}, openloop_classes=("event",)),
        "full": Profile(
            "full", warmup_s=1, duration_s=4, reps=3, max_minutes=75,
            concurrency=(16, 64, 256),
            wide_endpoints=("/", "/cpu-intensive", "/io-intensive", "/cached-data"),
            extreme=(2000, ("/", "/io-intensive")),
            sweeps={"workers": (("sync", "event"), tuple(workers), ("/cpu-intensive", "/io-intensive"), 64),
                    "threads": ("thread", (1, 4, 16, 64), ("/io-intensive",), 64),
                    "pool_size": ("event", (1, 2, 5, 16, 32), ("/io-intensive",), 256),
                    "max_requests": ("sync", (0, 10000, 1000, 100), ("/",), 64),
                    "worker_connections": ("event", (16, 64, 256, 1024), ("/",), 256)},
            openloop={"/io-intensive": (0.5, 0.9), "/cpu-intensive": (0.5, 0.9)}),
        # The tuning chapter's benchmark_test.sh: each class, each endpoint, one level.
        "chapter": Profile(
            "chapter", warmup_s=1, duration_s=10, reps=1, max_minutes=120,
            cache_on=False, cold_wave=(), baselines=False, front_classes=()),
    }


# Sweeps hold everything else at the class's defaults, except the pool sweep, which
# turns the overflow off so that pool_size alone bounds the connections.
SWEEP_EXTRA = {"pool_size": {"pool_max_overflow": 0}}


def _matrix_steps(p, cls, served):
    steps = []
    for ep in p.endpoints:
        if ep not in served:
            continue
        levels = p.concurrency if ep in p.wide_endpoints or not p.wide_endpoints else (p.reference,)
        for conc in levels:
            steps.append(Step("matrix", ep, conc, cls=cls))
            # Right after the same step behind the stack's Nginx: the two alternate closely.
            if ep == "/" and conc == p.reference and p.baselines and cls in p.front_classes:
                steps.append(Step("front", ep, conc, cls=cls, front="minimal"))
        if p.extreme and ep in p.extreme[1]:
            steps.append(Step("matrix", ep, p.extreme[0], cls=cls))
            # The event class there behind the minimal Nginx too: with the bare responder's
            # own figures, it tells what the stack's Nginx, and what perfcgi, lose to that
            # many connections (report_targets.high_concurrency_lines).
            if ep == "/" and cls == "event" and p.baselines and cls in p.front_classes:
                steps.append(Step("front", ep, p.extreme[0], cls=cls, front="minimal"))
        if p.cache_on and ep in CACHEABLE:
            steps.append(Step("matrix", ep, p.reference, cls=cls, cache="on"))
    if p.cold_wave and "/cached-data" in served:
        steps += [Step("cold_wave", "/cached-data", p.reference, cls=cls, cache="on", sweep_value=w)
                  for w in p.cold_wave]
    if cls in p.openloop_classes:
        for ep, fractions in p.openloop.items():
            if ep in served:
                steps += [Step("openloop", ep, p.reference, cls=cls, rate_fraction=f) for f in fractions]
    return steps


def build(p, served, target="stack"):
    """The phases of profile p over the endpoints the target serves."""
    if target == "url":
        steps = [Step("matrix", ep, conc, cls="url") for ep in p.endpoints if ep in served for conc in p.concurrency]
        return [Phase("url", steps=steps, label="the server at --url")]
    phases = []
    if p.baselines:
        levels = sorted(set(p.concurrency) | ({p.extreme[0]} if p.extreme else set()))
        steps = [Step("baseline", "/", conc, baseline=b) for b in ("nginx-return-200", "libfcgi-loop", "nonblocking-fcgi")
                 for conc in levels]
        if "/memory-test" in served and "/memory-test" in p.endpoints:
            steps += [Step("baseline", "/memory-test", p.reference, baseline=b) for b in ("memory-reuse", "memory-fresh")]
        phases.append(Phase("baseline", label="baselines", steps=steps))
    for cls in p.classes:
        phases.append(Phase("stack", {"worker_class": cls}, _matrix_steps(p, cls, served), label=f"{cls} workers",
                            idle_probe=True))
    for group, (classes, values, endpoints, conc) in p.sweeps.items():
        for cls in (classes,) if isinstance(classes, str) else classes:
            if cls not in p.classes:
                continue
            for v in values:
                settings = {"worker_class": cls, group: v, **SWEEP_EXTRA.get(group, {})}
                steps = [Step("sweep", ep, conc, cls=cls, group=group, sweep_value=v)
                         for ep in endpoints if ep in served]
                phases.append(Phase("stack", settings, steps, label=f"{cls} workers, {group} = {v}"))
    return phases
