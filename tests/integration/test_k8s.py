"""The Kubernetes manifests of deploy/k8s: rendered, validated offline, and held to the
project's own files.

No stack. `kubectl kustomize deploy/k8s` renders them; tests/k8s/validate.mjs validates
every object against the Kubernetes API schemas of the kubernetes-models npm package that
tests/k8s/package-lock.json pins (installed by `deploy/install-deps.sh test`, never
fetched here), strictly: an unknown field fails as a wrong type does, and a test proves
it does. Then what the schemas cannot know: the Nginx site is the shipped template, the
perfcgi settings are ones the binary accepts, the probes and the drain fit those
settings, and Debian's PgBouncer starts with the shipped configuration.
Standard library only.
"""

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile

from harness import REPO, clean_env, free_port, wait_until

NEEDS_STACK = False
# It runs kubectl, node and PgBouncer, and bin/perfcgi only for --print-config.
RUNS_PERFCGI_BIN = False

K8S = REPO / "deploy" / "k8s"
VALIDATOR = REPO / "tests" / "k8s" / "validate.mjs"
NGINX_TEMPLATE = REPO / "nginx" / "perfcgi.conf.template"
TIMEOUT = 60


def run(cmd, stdin=None):
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO)


@functools.lru_cache(maxsize=None)
def rendered():
    """The YAML `kubectl kustomize deploy/k8s` prints."""
    assert shutil.which("kubectl"), "no kubectl: run deploy/install-deps.sh test"
    r = run(["kubectl", "kustomize", str(K8S)])
    assert r.returncode == 0, f"kubectl kustomize failed: {r.stderr}"
    return r.stdout


def validate(yaml_text):
    """(returncode, objects or None, stderr) of the validator on yaml_text."""
    assert (VALIDATOR.parent / "node_modules" / "kubernetes-models").is_dir(), \
        "tests/k8s/node_modules is missing: run deploy/install-deps.sh test"
    r = run(["node", str(VALIDATOR)], stdin=yaml_text)
    return r.returncode, json.loads(r.stdout) if r.returncode == 0 else None, r.stderr


@functools.lru_cache(maxsize=None)
def objects():
    """{(kind, name): object} of the rendered manifests, validated."""
    rc, objs, err = validate(rendered())
    assert rc == 0, f"the rendered manifests do not validate:\n{err}"
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def one(kind, name):
    """The object of that kind whose name is name, or name plus kustomize's hash suffix."""
    named = re.compile(re.escape(name) + r"(-[a-z0-9]{10})?")
    found = [o for (k, n), o in objects().items() if k == kind and named.fullmatch(n)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} in the rendered manifests"
    return found[0]


def container(deployment, name):
    return next(c for c in one("Deployment", deployment)["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def test_k8s_manifests_render_and_validate():
    kinds = sorted(objects())
    for expected in [("Deployment", "perfcgi"), ("Service", "perfcgi"), ("HorizontalPodAutoscaler", "perfcgi"),
                     ("PodDisruptionBudget", "perfcgi"), ("Deployment", "pgbouncer"), ("Service", "pgbouncer"),
                     ("PodDisruptionBudget", "pgbouncer")]:
        assert expected in kinds, f"{expected} missing from {kinds}"
    for cm in ("perfcgi-nginx-site", "perfcgi-settings", "pgbouncer-config"):
        one("ConfigMap", cm)


def test_k8s_validator_rejects_unknown_field_and_wrong_type():
    text = rendered()
    # A misspelt field (the schemas let unknown ones through unless checked strictly),
    # a field at the wrong level, and a wrong type.
    for old, new, complaint in [
        ("readinessProbe:", "readinessProbes:", "/spec/template/spec/containers/0/readinessProbes: unknown field"),
        ("  minReplicas: 2", "  minReplica: 2", "HorizontalPodAutoscaler perfcgi: /spec/minReplica: unknown field"),
        ("  maxUnavailable: 1", '  maxUnavailable: [1]', "PodDisruptionBudget perfcgi: /spec/maxUnavailable must be"),
        ("terminationGracePeriodSeconds: 45", 'terminationGracePeriodSeconds: "45"',
         "/spec/template/spec/terminationGracePeriodSeconds must be integer"),
    ]:
        assert old in text, f"{old!r} is not in the rendered manifests"
        rc, _, err = validate(text.replace(old, new, 1))
        assert rc != 0, f"{new!r} passed validation"
        assert complaint in err, f"{new!r}: expected {complaint!r} in:\n{err}"


def test_k8s_nginx_site_is_the_shipped_template():
    site = one("ConfigMap", "perfcgi-nginx-site")
    assert site["data"] == {"default.conf.template": NGINX_TEMPLATE.read_text()}
    nginx = container("perfcgi", "nginx")
    pod = one("Deployment", "perfcgi")["spec"]["template"]["spec"]
    volume = next(v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == site["metadata"]["name"])
    assert {"name": volume, "mountPath": "/etc/nginx/templates", "readOnly": True} in nginx["volumeMounts"]
    # Every variable the template uses is set, and the entrypoint substitutes only those.
    env = {e["name"]: e["value"] for e in nginx["env"]}
    used = set(re.findall(r"\$\{(NGINX_[A-Z_]+)\}", NGINX_TEMPLATE.read_text()))
    assert used <= env.keys(), f"unset in the nginx container: {sorted(used - env.keys())}"
    assert env["NGINX_ENVSUBST_FILTER"] == "^NGINX_"
    # FastCGI and the status socket over the pod's loopback, where perfcgi listens.
    settings = one("ConfigMap", "perfcgi-settings")["data"]
    assert env["NGINX_APP_SERVER"] == settings["PERFCGI_BIND"]
    assert env["NGINX_STATUS_SERVER"] == "127.0.0.1:" + settings["PERFCGI_STATUS_BIND"].rsplit(":", 1)[1]
    cache = next(m for m in nginx["volumeMounts"] if m["mountPath"] == env["NGINX_CACHE_DIR"])
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == cache["name"])


def print_config(settings):
    """perfcgi --print-config with the pod's PERFCGI_* variables: {name: value}."""
    binary = REPO / "bin" / "perfcgi"
    assert binary.exists(), "bin/perfcgi is not built: make all"
    r = subprocess.run([str(binary), "--print-config"], env=clean_env(**settings), capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, f"perfcgi refuses the pod's settings: {r.stderr}"
    return dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)


def test_k8s_perfcgi_settings_probes_and_drain():
    cfg = print_config(one("ConfigMap", "perfcgi-settings")["data"])
    perfcgi = container("perfcgi", "perfcgi")
    pod = one("Deployment", "perfcgi")["spec"]["template"]["spec"]
    # The probes ask the master's status socket, on the port it binds, by name.
    status_port = int(cfg["status_bind"].rsplit(":", 1)[1])
    assert cfg["status_bind"].startswith("0.0.0.0:"), "the kubelet probes from outside the pod"
    assert {"name": "status", "containerPort": status_port} in perfcgi["ports"]
    assert perfcgi["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "status"}
    assert perfcgi["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "status"}
    # The drain: Nginx keeps accepting, then quits while perfcgi still accepts, and the
    # kubelet's SIGKILL comes after perfcgi's whole graceful stop.
    drain, graceful = int(cfg["drain_delay"]), int(cfg["graceful_timeout"])
    assert drain > 0
    sleep = container("perfcgi", "nginx")["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and 0 < int(sleep[1]) < drain, sleep
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > drain + graceful, \
        f"terminationGracePeriodSeconds {grace} <= drain_delay {drain} + graceful_timeout {graceful}"
    # workers fits the container's CPU limit (auto would count the node's cores).
    assert cfg["workers"] == str(2 * int(perfcgi["resources"]["limits"]["cpu"]) + 1)
    # The autoscaler scales this Deployment, on CPU and the busy ratio.
    hpa = one("HorizontalPodAutoscaler", "perfcgi")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "perfcgi"}
    assert {m["type"] for m in hpa["metrics"]} == {"ContainerResource", "Pods"}
    # The Pods metric is the one the Prometheus adapter rule of the README makes.
    pods_metric = next(m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods")
    assert f"as: {pods_metric}\n" in (K8S / "README.md").read_text(), f"no adapter rule for {pods_metric}"
    assert hpa["minReplicas"] >= 2


def test_k8s_pgbouncer_config_starts_pgbouncer():
    """Debian's PgBouncer runs the ConfigMap's pgbouncer.ini (its paths and listen address
    moved to a temporary directory and a free loopback port), with a Secret's two files
    as the README describes them, and accepts connections."""
    pgbouncer = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    assert os.path.exists(pgbouncer), "no pgbouncer: run deploy/install-deps.sh test"
    ini = one("ConfigMap", "pgbouncer-config")["data"]["pgbouncer.ini"]
    assert re.search(r"^pool_mode = transaction$", ini, re.M)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pcgi-k8s-") as tmp:
        os.chmod(tmp, 0o755)
        ini = ini.replace("/etc/pgbouncer/secret", tmp)
        ini = re.sub(r"^listen_addr = .*$", "listen_addr = 127.0.0.1", ini, flags=re.M)
        ini = re.sub(r"^listen_port = .*$", f"listen_port = {port}", ini, flags=re.M)
        files = {"pgbouncer.ini": ini,
                 "databases.ini": "[databases]\nperfcgi = host=127.0.0.1 port=5432 dbname=perfcgi\n",
                 "userlist.txt": '"perfcgi" "secret"\n'}
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(tmp, name), 0o644)
        # PgBouncer refuses to run as root: it switches to nobody then (-u).
        cmd = [pgbouncer] + (["-u", "nobody"] if os.geteuid() == 0 else []) + [os.path.join(tmp, "pgbouncer.ini")]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            def accepts():
                assert p.poll() is None, f"pgbouncer exited: {p.stdout.read()}"
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0
            wait_until(accepts, timeout=20, message="pgbouncer listening")
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            p.stdout.close()
