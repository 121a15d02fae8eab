"""The images' Python requirements, read from pyproject.toml so that they never drift from it.

    python deploy/requirements.py cpu           # the project's dependencies (tensorflow-cpu on x86_64);
                                                # "server" is the same
    python deploy/requirements.py gpu           # the same, with TensorFlow from the "gpu" extra
                                                # (tensorflow[and-cuda]: a GPU when the host has one,
                                                # the CPU otherwise) instead of tensorflow / tensorflow-cpu;
                                                # "worker" is the same
    python deploy/requirements.py constraints   # exact versions of everything both images install, as
                                                # pip resolves them now (Python 3.11, Linux x86_64):
                                                # regenerates deploy/constraints.txt (needs the index)

The Dockerfiles install ``requirements.py $TENSORFLOW`` (a build argument: the server's default is cpu,
the worker's gpu; with the same value, BuildKit builds the two images' dependency layer once) with
``-c deploy/constraints.txt`` (exact versions), then the project itself with ``--no-deps``. Standard library only (Python 3.11+: tomllib).
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"cannot read a package name in {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def project(pyproject: Path = ROOT / "pyproject.toml") -> dict:
    with open(pyproject, "rb") as f:
        return tomllib.load(f)["project"]


def requirements(role: str, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    meta = project(pyproject)
    deps = list(meta["dependencies"])
    if role in ("cpu", "server"):
        return deps
    if role in ("gpu", "worker"):
        gpu = meta.get("optional-dependencies", {}).get("gpu")
        if not gpu:
            raise ValueError("pyproject.toml has no 'gpu' extra (tensorflow[and-cuda]) for the worker image")
        return [d for d in deps if _name(d) not in ("tensorflow", "tensorflow-cpu")] + list(gpu)
    raise ValueError(f"unknown role {role!r}: cpu (or server), gpu (or worker) or constraints")


def constraints() -> list[str]:
    """name==version for everything the server and worker images install, as pip resolves it now for
    this interpreter and platform (the images': Python 3.11 on Linux): ``pip install --dry-run --report``."""
    import json
    import subprocess
    import tempfile

    pins: dict[str, str] = {}
    for role in ("server", "worker"):
        with tempfile.TemporaryDirectory() as tmp:
            reqs, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
            reqs.write_text("\n".join(requirements(role)) + "\n", encoding="utf-8")
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
                            "--report", str(report), "-r", str(reqs)], check=True)
            for item in json.loads(report.read_text(encoding="utf-8"))["install"]:
                name, version = _name(item["metadata"]["name"]), item["metadata"]["version"]
                if pins.setdefault(name, version) != version:
                    raise SystemExit(f"{name}: the server resolves {pins[name]}, the worker {version}")
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "constraints":
        print("# Exact versions of everything the images install (pip -c). Regenerate, with Python 3.11 on Linux x86_64:")
        print("#   .venv/bin/python deploy/requirements.py constraints > deploy/constraints.new && mv deploy/constraints.new deploy/constraints.txt")
        lines = constraints()
    else:
        try:
            lines = requirements(argv[0])
        except ValueError as exc:
            print(f"requirements.py: {exc}", file=sys.stderr)
            return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
