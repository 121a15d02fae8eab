"""The Kubernetes manifests (deploy/k8s): each overlay renders, every object validates against the
Kubernetes API schemas (kubernetes-validate, strict: no unknown field), and the manifests agree with the
code: ports, the environment variables they set, probe targets, Services and their pods, image names
and the user the images run as. No cluster runs here; this is what can be checked without one.

Overlays are rendered by ``render`` below (the subset of kustomize they use: resources, labels, images,
strategic-merge patches); where ``kubectl`` is installed the test also renders them with
``kubectl kustomize`` and requires the same objects.
"""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ["cpu", "gpu"]
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]  # the oldest with every field used here, and the newest the schemas cover
CODE_DIRS = ["textgen", "server", "trainer", "client", "web"]


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge(base, patch):
    """A strategic merge patch as kustomize applies these: maps merge, lists of named maps merge by
    name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            match = next((i for i, x in enumerate(out) if x["name"] == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def render(directory: Path) -> list[dict]:
    """The objects ``kubectl kustomize directory`` gives, for the features these manifests use."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = []
    for resource in spec.get("resources", []):
        path = directory / resource
        objects += render(path) if path.is_dir() else load_all(path)
    for entry in spec.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for patch in spec.get("patches", []):
        change = yaml.safe_load((directory / patch["path"]).read_text())
        for i, obj in enumerate(objects):
            if (obj["kind"], obj["metadata"]["name"]) == (change["kind"], change["metadata"]["name"]):
                objects[i] = merge(obj, change)
    images = {image["name"]: image for image in spec.get("images", [])}
    for container in containers(objects):
        image = images.get(container["image"].split(":")[0])
        if image:
            container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def containers(objects: list[dict]) -> list[dict]:
    return [c for obj in objects for c in pod_spec(obj).get("containers", [])]


def pod_spec(obj: dict) -> dict:
    return obj.get("spec", {}).get("template", {}).get("spec", {}) if obj["kind"] in ("Deployment", "StatefulSet") else {}


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def env_of(container: dict, objects: list[dict]) -> dict[str, str]:
    """A container's environment: its configMaps' data, then its own ``env``."""
    maps = by_kind(objects, "ConfigMap")
    env = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / "overlays" / request.param)


def test_every_object_validates_against_the_kubernetes_api_schemas(overlay):
    name, objects = overlay
    kinds = sorted({obj["kind"] for obj in objects})
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "PersistentVolumeClaim",
                     "PodDisruptionBudget", "Service", "StatefulSet"]
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {obj['kind']} {obj['metadata']['name']} is not valid Kubernetes {version}: "
                            f"{exc.message} at {'/'.join(map(str, exc.path))}")


def test_a_wrong_field_fails_the_validation():
    """The check above can fail: a misspelt field and a bad type are caught."""
    deployment = copy.deepcopy(by_kind(render(K8S / "overlays" / "cpu"), "Deployment")["textgen-server"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment = copy.deepcopy(by_kind(render(K8S / "overlays" / "cpu"), "Deployment")["textgen-server"])
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl here: rendered by the test's kustomize subset only")
@pytest.mark.parametrize("name", OVERLAYS)
def test_kubectl_kustomize_renders_the_same_objects(name):
    out = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / name)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in render(K8S / "overlays" / name)}
    assert theirs.keys() == ours.keys()
    for key in ours:
        assert theirs[key] == ours[key], key


def test_every_environment_variable_set_is_one_the_code_reads(overlay):
    _, objects = overlay
    code = "\n".join(p.read_text() for d in CODE_DIRS for p in (REPO / d).rglob("*.py"))
    code += (REPO / "deploy" / "probe.py").read_text()
    for container in containers(objects):
        if not container["image"].startswith("textgen-"):
            continue
        for variable in env_of(container, objects):
            assert f'"{variable}"' in code, f"{container['name']} sets {variable}, which no textgen code reads"


def test_ports_probes_and_services_agree_with_the_code(overlay):
    _, objects = overlay
    workloads = {**by_kind(objects, "Deployment"), **by_kind(objects, "StatefulSet")}
    services = by_kind(objects, "Service")
    server = pod_spec(workloads["textgen-server"])["containers"][0]
    env = env_of(server, objects)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"grpc": port_of(env["TEXTGEN_ADDR"]), "metrics": port_of(env["TEXTGEN_METRICS_ADDR"])}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == ports["grpc"]  # the standard gRPC health service
    assert workloads["textgen-server"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(
        ports["metrics"])
    # The drain (TEXTGEN_GRACE_SECONDS) fits in the pod's grace period.
    assert int(env["TEXTGEN_GRACE_SECONDS"]) < pod_spec(workloads["textgen-server"])["terminationGracePeriodSeconds"]

    worker = pod_spec(workloads["textgen-worker"])["containers"][0]
    assert worker["ports"][0]["containerPort"] == port_of(env_of(worker, objects)["TEXTGEN_METRICS_ADDR"])
    assert worker["livenessProbe"]["exec"]["command"][:2] == ["python", "/app/deploy/probe.py"]
    web = pod_spec(workloads["textgen-web"])["containers"][0]
    web_env = env_of(web, objects)
    assert web["ports"][0]["containerPort"] == port_of(web_env["TEXTGEN_WEB_ADDR"])
    assert web["command"] == ["python", "-m", "web"] and (REPO / "web" / "__main__.py").is_file()

    # Every Service selects a workload's pods, on a port those pods name.
    for name, service in services.items():
        selected = [w for w in workloads.values()
                    if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, name
        names = {p["name"] for c in pod_spec(selected[0])["containers"] for p in c["ports"]}
        assert all(p["targetPort"] in names for p in service["spec"]["ports"]), name
    # The addresses the processes dial are Services, on their ports.
    dialled = {"TEXTGEN_SERVER": web_env["TEXTGEN_SERVER"], "REDIS_URL": env["REDIS_URL"]}
    for variable, address in dialled.items():
        host, port = re.match(r"^(?:dns:///|redis://)?([a-z0-9-]+):(\d+)", address).groups()
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], variable
    ingress = by_kind(objects, "Ingress")["textgen-web"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] in services
    # Each pod's data volume is the shared claim, at TEXTGEN_DATA_DIR.
    claims = by_kind(objects, "PersistentVolumeClaim")
    assert claims["textgen-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("textgen-server", "textgen-worker"):
        spec = pod_spec(workloads[name])
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "data")
        assert mount["mountPath"] == env["TEXTGEN_DATA_DIR"]
        assert next(v for v in spec["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"] in claims


def test_images_are_the_ones_deploy_builds_and_pods_run_as_their_user(overlay):
    name, objects = overlay
    dockerfiles = {image: (REPO / "deploy" / f"Dockerfile.{image.split('-')[1]}").read_text()
                   for image in ("textgen-server", "textgen-worker")}
    for image, dockerfile in dockerfiles.items():
        assert f"-t {image} ." in dockerfile  # the name its build line gives it
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfiles["textgen-server"]).group(1))
    assert uid == int(re.search(r"useradd .*--uid (\d+)", dockerfiles["textgen-worker"]).group(1))
    worker_image = next(c["image"] for c in containers(objects) if c["name"] == "worker")
    assert worker_image == f"textgen-worker:{name}"  # the TENSORFLOW build argument it was built with
    assert f"--build-arg TENSORFLOW={name}" in dockerfiles["textgen-worker"]
    for obj in [*by_kind(objects, "Deployment").values(), *by_kind(objects, "StatefulSet").values()]:
        spec = pod_spec(obj)
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            if container["image"].startswith("textgen-"):
                assert spec["securityContext"]["runAsUser"] == uid
                assert "/tmp" in [m["mountPath"] for m in container["volumeMounts"]]


def test_the_gpu_overlay_gives_each_worker_one_gpu_and_the_cpu_overlay_none():
    for name, gpus in (("cpu", None), ("gpu", "1")):
        worker = next(c for c in containers(render(K8S / "overlays" / name)) if c["name"] == "worker")
        assert worker["resources"]["limits"].get("nvidia.com/gpu") == gpus
        assert worker["resources"]["requests"].get("nvidia.com/gpu") == gpus
