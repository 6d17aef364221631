"""environment.yml (conda) and pyproject.toml (pip) must ask for the same packages."""

import re
import tomllib

from conftest import ROOT


def _normalise(spec: str) -> tuple[str, str]:
    spec = spec.strip().strip('"')
    name = re.match(r"[A-Za-z0-9_.\-]+", spec).group(0)
    rest = spec[len(name):].replace(" ", "")
    return name.lower().replace("_", "-"), rest


def pip_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_normalise(s) for s in specs)


def conda_requirements() -> dict[str, str]:
    found = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("\ndependencies:", 1)[1].splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9][^#]*?)\s*(#.*)?$", line)
        if not m or m.group(1) in ("pip", "pip:") or m.group(1).startswith("python="):
            continue
        name, rest = _normalise(m.group(1))
        found[name] = rest.replace("=", "==") if re.fullmatch(r"=[^=].*", rest) else rest
    return found


def test_conda_and_pip_ask_for_the_same_packages_and_versions():
    assert conda_requirements() == pip_requirements()


def test_torch_is_pinned_to_the_cpu_build_version():
    assert pip_requirements()["torch"] == "==2.13.0"


def test_environment_yml_uses_python_311():
    assert "python=3.11" in (ROOT / "environment.yml").read_text()
