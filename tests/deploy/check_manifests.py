#!/usr/bin/env python3
"""Checks that the deployment files agree with the code, so they cannot drift from it.

  check_manifests.py --source DIR --modelsmithd PATH --modelsmith PATH

Parses every YAML file under deploy/k8s and compares it with what the real binaries say about
themselves (`--help`: flags and MODELSMITH_* variables), with the proto (service name, spec
fields), the Dockerfile (binaries, ports, user) and scripts/install-deps.sh (modes). Prints one
line per check and "N passed, M failed"; exits 1 if any check failed.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys

import yaml

results = []


def check(name, ok, detail=""):
    ok = bool(ok)
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"))


def load_documents(root):
    docs = {}
    for path in sorted(glob.glob(os.path.join(root, "deploy", "k8s", "**", "*.yaml"), recursive=True)):
        with open(path) as f:
            try:
                docs[path] = [d for d in yaml.safe_load_all(f) if d is not None]
                check(f"parses {os.path.relpath(path, root)}", True)
            except yaml.YAMLError as e:
                check(f"parses {os.path.relpath(path, root)}", False, str(e))
    return docs


def help_text(binary, *args):
    return subprocess.run([binary, *args, "--help"], capture_output=True, text=True).stdout


def containers(doc):
    spec = doc.get("spec", {})
    template = spec.get("template", {}).get("spec", {})
    return template.get("containers", [])


def svc_selector(by_kind):
    """The labels the kustomization puts on every resource (and selector)."""
    (path, k), = [(p, k) for p, k in by_kind["Kustomization"] if os.path.basename(os.path.dirname(p)) == "k8s"]
    return k["labels"][0]["pairs"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--modelsmithd", required=True)
    ap.add_argument("--modelsmith", required=True)
    args = ap.parse_args()
    root = args.source

    server_help = help_text(args.modelsmithd)
    server_flags = set(re.findall(r"(--[a-z0-9-]+)", server_help))
    server_env = set(re.findall(r"Env:(MODELSMITH_[A-Z0-9_]+)", server_help))
    check("modelsmithd --help lists flags and their variables", len(server_flags) > 8 and len(server_env) > 8,
          f"{len(server_flags)} flags, {len(server_env)} variables")
    run_help = help_text(args.modelsmith, "run")
    check("modelsmith run takes --spec", "--spec" in run_help, run_help)
    invalid = subprocess.run([args.modelsmith, "run", "--spec", "/nonexistent/spec.json"], capture_output=True)
    check("modelsmith run exits 2 on invalid input", invalid.returncode == 2, f"exit {invalid.returncode}")

    dockerfile = open(os.path.join(root, "Dockerfile")).read()
    install = open(os.path.join(root, "scripts", "install-deps.sh")).read()
    for mode in re.findall(r"install-deps\.sh (--[a-z-]+)", dockerfile):
        check(f"install-deps.sh has the Dockerfile's mode {mode}", f"  {mode})" in install)
    image_binaries = set(re.findall(r"/opt/modelsmith/bin/(\w+)", dockerfile))
    check("the image holds modelsmithd and modelsmith", image_binaries == {"modelsmithd", "modelsmith"}, image_binaries)
    exposed = {int(p) for p in re.findall(r"EXPOSE ([\d ]+)", dockerfile)[0].split()}
    image_user = re.search(r"^USER (\d+)", dockerfile, re.M).group(1)
    for name in re.findall(r"(MODELSMITH_[A-Z_]+)=", dockerfile):
        check(f"Dockerfile sets a real variable {name}", name in server_env)

    proto = open(os.path.join(root, "proto", "modelsmith", "v1", "job_service.proto")).read()
    specs = open(os.path.join(root, "proto", "modelsmith", "v1", "specs.proto")).read()
    service_name = "modelsmith.v1." + re.search(r"service (\w+)", proto).group(1)
    spec_fields = {}
    for message, body in re.findall(r"message (\w+Spec) \{(.*?)\n\}", specs, re.S):
        spec_fields[message] = set(re.findall(r"^\s+(?:repeated )?\w+ (\w+) = \d+;", body, re.M))
    kinds = {"shard": "ShardSpec", "convert": "ConvertSpec", "quantize": "QuantizeSpec", "bisect": "BisectSpec",
             "lora_merge": "LoraMergeSpec"}

    docs = load_documents(root)
    # Overlay patches are partial documents: checked on their own below, not as whole resources.
    patch_paths = set()
    for path, items in docs.items():
        for d in items:
            if d.get("kind") == "Kustomization":
                patch_paths |= {os.path.normpath(os.path.join(os.path.dirname(path), p["path"]))
                                for p in d.get("patches", [])}
    by_kind = {}
    patches = {}
    for path, items in docs.items():
        for d in items:
            check(f"{os.path.basename(path)} {d.get('kind')} has apiVersion, kind, name",
                  all(k in d for k in ("apiVersion", "kind")) and ("metadata" in d or d["kind"] == "Kustomization"))
            if os.path.normpath(path) in patch_paths:
                patches.setdefault(os.path.basename(path), []).append(d)
            else:
                by_kind.setdefault(d["kind"], []).append((path, d))

    for path, k in by_kind.get("Kustomization", []):
        directory = os.path.dirname(path)
        listed = {r for r in k.get("resources", []) if r.endswith(".yaml")} | {p["path"] for p in k.get("patches", [])}
        present = {os.path.basename(p) for p in glob.glob(os.path.join(directory, "*.yaml"))} - {"kustomization.yaml"}
        check(f"{os.path.relpath(path, root)} lists exactly the manifests beside it", listed == present,
              f"listed {sorted(listed)} present {sorted(present)}")
        for r in k.get("resources", []):
            if not r.endswith(".yaml"):
                check(f"{os.path.relpath(path, root)} builds on a kustomization that exists",
                      os.path.exists(os.path.join(directory, r, "kustomization.yaml")), r)

    # Every metric the rules and the dashboard use is one modelsmithd exports (server/metrics.cc).
    metrics_source = open(os.path.join(root, "server", "metrics.cc")).read()
    exported = set(re.findall(r'"((?:modelsmith|process)_[a-z_]+)"', metrics_source))
    histograms = set(re.findall(r'BuildHistogram\(\)\s*\.Name\("([a-z_]+)"\)', metrics_source))
    exported |= {h + suffix for h in histograms for suffix in ("_bucket", "_sum", "_count")}
    check("server/metrics.cc names its metrics", len(exported) > 20 and histograms, sorted(exported))

    def check_metric_names(where, text):
        used = set(re.findall(r"\b((?:modelsmith|process)_[a-z_]+)", text))
        unknown = sorted(used - exported)
        check(f"{where} uses only exported metrics", used and not unknown, unknown)

    dashboards = glob.glob(os.path.join(root, "deploy", "grafana", "*.json"))
    check("there is a Grafana dashboard", len(dashboards) == 1, dashboards)
    for path in dashboards:
        dashboard = json.load(open(path))
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        check_metric_names(os.path.relpath(path, root), "\n".join(exprs))
        for wanted in ("modelsmith_queue_depth", "modelsmith_workers_busy", "modelsmith_job_duration_seconds_bucket",
                       "modelsmith_job_failures_total", "modelsmith_shard_imbalance_ratio",
                       "modelsmith_job_peak_resident_bytes", "modelsmith_memory_budget_bytes",
                       "modelsmith_object_store_requests_total", "modelsmith_object_store_retries_total"):
            check(f"the dashboard shows {wanted}", any(wanted in e for e in exprs))
    for path, rule in by_kind.get("PrometheusRule", []):
        alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
        check_metric_names(os.path.relpath(path, root), "\n".join(alerts.values()))
        for metric in ("modelsmith_queue_depth", "modelsmith_jobs_total", "modelsmith_replicas",
                       "modelsmith_memory_budget_bytes"):
            check(f"an alert watches {metric}", any(metric in e for e in alerts.values()), sorted(alerts))

    config = {}
    for path, cm in by_kind.get("ConfigMap", []):
        for key, value in (cm.get("data") or {}).items():
            if key.startswith("MODELSMITH_"):
                check(f"{cm['metadata']['name']} sets a real variable {key}", key in server_env, sorted(server_env))
                config[key] = value
            if key.endswith(".json"):
                try:
                    spec = json.loads(value)
                    kind = next(iter(spec))
                    fields = spec[kind]
                    ok = kind in kinds and set(fields) <= spec_fields[kinds[kind]]
                    check(f"{cm['metadata']['name']}/{key} is a JobSpec", ok, f"{kind}: {sorted(fields)}")
                except (ValueError, StopIteration, KeyError, TypeError) as e:
                    check(f"{cm['metadata']['name']}/{key} is a JobSpec", False, str(e))

    grpc_port = int(config["MODELSMITH_LISTEN"].rsplit(":", 1)[1])
    metrics_port = int(config["MODELSMITH_METRICS_LISTEN"].rsplit(":", 1)[1])
    health_port = int(config["MODELSMITH_HEALTH_LISTEN"].rsplit(":", 1)[1])
    check("the image exposes the configured ports", exposed == {grpc_port, metrics_port, health_port}, exposed)
    check("the server is not told to serve plaintext off loopback", "MODELSMITH_INSECURE_PLAINTEXT" not in config)
    for key in ("MODELSMITH_TLS_CERT", "MODELSMITH_TLS_KEY", "MODELSMITH_AUTH_FILE", "MODELSMITH_METRICS_AUTH_FILE"):
        check(f"the ConfigMap sets {key}", key in config)

    for path, dep in by_kind.get("Deployment", []):
        pod = dep["spec"]["template"]["spec"]
        (c,) = containers(dep)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check("deployment runs modelsmithd", c["command"][0] == "modelsmithd" and "modelsmithd" in image_binaries)
        for flag in [a for a in c.get("args", []) + c["command"][1:] if a.startswith("--")]:
            check(f"deployment flag {flag} exists", flag.split("=")[0] in server_flags)
        check("container ports match the listen addresses",
              ports == {"grpc": grpc_port, "metrics": metrics_port, "health": health_port}, ports)
        check("liveness probe is gRPC on the health port", c["livenessProbe"]["grpc"]["port"] == health_port)
        check("readiness probe is gRPC on the JobService, on the health port",
              c["readinessProbe"]["grpc"]["port"] == health_port and
              c["readinessProbe"]["grpc"].get("service") == service_name, c["readinessProbe"])
        volumes = {v["name"]: v for v in pod["volumes"]}
        secret_of = {m["mountPath"]: volumes[m["name"]].get("secret", {}).get("secretName") for m in c["volumeMounts"]}
        secrets = {d["metadata"]["name"]: d for _, d in by_kind.get("Secret", [])}
        certificates = {d["spec"]["secretName"] for _, d in by_kind.get("Certificate", [])}
        for key in ("MODELSMITH_TLS_CERT", "MODELSMITH_TLS_KEY", "MODELSMITH_AUTH_FILE", "MODELSMITH_METRICS_AUTH_FILE"):
            directory, file = os.path.split(config[key])
            secret = secret_of.get(directory)
            made = secret in certificates or (secret in secrets and file in secrets[secret].get("stringData", {}))
            check(f"{key} is a file of a mounted Secret", made, f"{config[key]}: {secret}")
        for _, policy in by_kind.get("NetworkPolicy", []):
            named = [p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])]
            check("the NetworkPolicy names the container's ports", named and all(p in ports for p in named), named)
        res = c["resources"]
        check("memory requests equal limits", res["requests"]["memory"] == res["limits"]["memory"], res)
        check("termination grace outlasts the drain grace",
              pod["terminationGracePeriodSeconds"] > float(config["MODELSMITH_SHUTDOWN_GRACE"]))
        check("pod runs as the image's non-root user", pod["securityContext"].get("runAsNonRoot") is True and
              str(pod["securityContext"].get("runAsUser")) == image_user)
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        check("the data dir is a mounted volume", config["MODELSMITH_DATA_DIR"] in mounts, mounts)
        env_sources = {(e.get("configMapRef") or e.get("secretRef"))["name"] for e in c["envFrom"]}
        names = {d["metadata"]["name"] for _, d in by_kind.get("ConfigMap", []) + by_kind.get("Secret", [])}
        check("deployment takes its environment from the ConfigMap and Secret", env_sources <= names, env_sources)
        for path_s, svc in by_kind.get("Service", []):
            target = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
            if svc["spec"].get("clusterIP") == "None":
                # gRPC clients balance calls over every pod themselves (HTTP/2 pins to one).
                check(f"headless service {svc['metadata']['name']} serves the grpc port alone",
                      target == {"grpc": "grpc"} and "grpc" in ports, target)
                continue
            check("service ports are named grpc and metrics and target the container's ports",
                  set(target) == {"grpc", "metrics"} and all(t in ports for t in target.values()), target)
            for _, sm in by_kind.get("ServiceMonitor", []):
                check("service monitor scrapes the service's metrics port",
                      all(e["port"] in target for e in sm["spec"]["endpoints"]))
                check("service monitor scrapes over TLS with basic auth",
                      all(e.get("scheme") == "https" and "basicAuth" in e for e in sm["spec"]["endpoints"]))
        check("a headless service lets gRPC clients balance over the replicas",
              any(svc["spec"].get("clusterIP") == "None" for _, svc in by_kind.get("Service", [])))

        # Replicas on PostgreSQL: the URL (with its password) from a Secret, pods named in leases.
        replicas = dep["spec"]["replicas"]
        check("the deployment runs several replicas", replicas >= 2, replicas)
        env = {e["name"]: e for e in c.get("env", [])}
        for name in env:
            check(f"deployment sets a real variable {name}", name in server_env, sorted(server_env))
        database = env.get("MODELSMITH_DATABASE", {}).get("valueFrom", {}).get("secretKeyRef", {})
        secrets = {d["metadata"]["name"]: d for _, d in by_kind.get("Secret", [])}
        url = secrets.get(database.get("name"), {}).get("stringData", {}).get(database.get("key"), "")
        check("MODELSMITH_DATABASE comes from a Secret holding a postgresql:// URL", url.startswith("postgresql://"),
              database)
        check("MODELSMITH_DATABASE is not in the ConfigMap", "MODELSMITH_DATABASE" not in config)
        check("each replica is named after its pod",
              env.get("MODELSMITH_REPLICA_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") ==
              "metadata.name")
        check("the deployment rolls replicas one at a time",
              dep["spec"]["strategy"]["type"] == "RollingUpdate" and
              dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1)
        check("the lease length is configured", "MODELSMITH_LEASE_SECONDS" in config)
        for _, pdb in by_kind.get("PodDisruptionBudget", []):
            check("the disruption budget selects the pods and keeps most of them",
                  pdb["spec"]["selector"]["matchLabels"] == svc_selector(by_kind) and
                  pdb["spec"].get("maxUnavailable", replicas) < replicas, pdb["spec"])
        for _, hpa in by_kind.get("HorizontalPodAutoscaler", []):
            target_ref = hpa["spec"]["scaleTargetRef"]
            check("the autoscaler scales the deployment",
                  target_ref["kind"] == "Deployment" and target_ref["name"] == dep["metadata"]["name"])
            check("the autoscaler starts from the deployment's replicas", hpa["spec"]["minReplicas"] == replicas)
            names = [m[m["type"].lower()]["metric"]["name"] for m in hpa["spec"]["metrics"]]
            check("the autoscaler follows the queue depth", names == ["modelsmith_queue_depth"], names)
        check("there is a disruption budget and an autoscaler",
              by_kind.get("PodDisruptionBudget") and by_kind.get("HorizontalPodAutoscaler"))

    for path, job in by_kind.get("Job", []):
        (c,) = containers(job)
        command = " ".join(c["command"])
        name = job["metadata"]["name"]
        check(f"{name} runs `modelsmith run --spec`", "modelsmith run --spec" in command, command)
        rules = job["spec"].get("podFailurePolicy", {}).get("rules", [])
        no_retry = [r for r in rules if r.get("onExitCodes", {}).get("values") == [2] and
                    r["action"] in ("FailJob", "FailIndex") and r["onExitCodes"].get("containerName") == c["name"]]
        check(f"{name} does not retry exit code 2 (invalid input)", len(no_retry) == 1, rules)
        if job["spec"].get("completionMode") == "Indexed":
            check(f"{name} picks its spec by completion index", "${JOB_COMPLETION_INDEX}" in command, command)
            specs_cm = [cm for _, cm in by_kind["ConfigMap"] if cm["metadata"]["name"] == "modelsmith-specs"][0]
            wanted = {f"spec-{i}.json" for i in range(job["spec"]["completions"])}
            check(f"{name} has a spec for every index", wanted <= set(specs_cm["data"]), sorted(specs_cm["data"]))

    # The one-pod SQLite variant: one replica, its own volume, none of the replication.
    single = patches.get("deployment-patch.yaml", [{}])[0]
    check("single/ runs one replica, recreated", single.get("spec", {}).get("replicas") == 1 and
          single["spec"]["strategy"]["type"] == "Recreate", single)
    (single_c,) = single["spec"]["template"]["spec"]["containers"]
    check("single/ drops MODELSMITH_DATABASE (SQLite in the data dir)",
          single_c["env"] == [{"name": "MODELSMITH_DATABASE", "$patch": "delete"}], single_c)
    pvcs = {d["metadata"]["name"] for _, d in by_kind.get("PersistentVolumeClaim", [])}
    claims = [v["persistentVolumeClaim"]["claimName"] for v in single["spec"]["template"]["spec"]["volumes"]]
    check("single/ keeps the data dir on a volume claim", claims and set(claims) <= pvcs, claims)
    removed = {d["kind"] for d in patches.get("remove-replication.yaml", []) if d.get("$patch") == "delete"}
    check("single/ removes the autoscaler, the budget and the database Secret",
          removed == {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"}, removed)
    for _, cluster in by_kind.get("Cluster", []):
        check("the example database cluster has a primary and standbys", cluster["spec"]["instances"] >= 3)
        app_secret = cluster["metadata"]["name"] + "-app"
        check(f"the deployment says how to use {app_secret}",
              app_secret in open(os.path.join(root, "deploy", "k8s", "deployment.yaml")).read())

    env_file = open(os.path.join(root, "deploy", "systemd", "modelsmithd.env")).read()
    for name in re.findall(r"^#?(MODELSMITH_[A-Z_]+)=", env_file, re.M):
        check(f"systemd env file sets a real variable {name}", name in server_env)

    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
