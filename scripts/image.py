"""`make image`: the service's image, built from a bento by `bentoml containerize`, tagged `<version>` and `latest`.

    python -m scripts.image [--bento housing-price-service:latest]

The backend is docker when its engine answers, else podman. Where the base image the bento's Dockerfile starts
FROM is neither local nor pullable (no registry reachable, as on the project's offline machines), an offline
stand-in of that exact name is built first from Debian packages (scripts/base_image.sh; for tests only, never
to be pushed), so the generated Dockerfile is built unchanged. The stand-in is kept, so later builds reuse it.

With podman: CONTAINERS_CONF defaults to deploy/containers.conf (runc, explicit ulimits), the build uses the host
network (its package installs) and the docker image format, which keeps SHELL and HEALTHCHECK (podman's default
OCI format drops both). containerize runs from `/` (bentoml/BentoML#5566, see docs/ci-cd.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from devtools.paths import BIN, ROOT

CONTAINERS_CONF = ROOT / "deploy" / "containers.conf"
STAND_IN_LABEL = "org.opencontainers.image.description"


@dataclass(frozen=True)
class Image:
    backend: str
    bento: str  # name:version
    tags: tuple[str, ...]  # name:version, name:latest
    base: str  # the FROM image, fully qualified
    stand_in_base: bool  # built on the offline stand-in, not the real base
    base_seconds: float  # making the base available: 0 when it was already local
    build_seconds: float  # bentoml containerize


def engine_env() -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless one is chosen already."""
    return {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}


def answers(command: list[str]) -> bool:
    if shutil.which(command[0]) is None:
        return False
    try:
        done = subprocess.run(command, env=engine_env(), capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def backend() -> str | None:
    """docker if its engine answers, else podman if it works here, else None."""
    if answers(["docker", "info"]):
        return "docker"
    if answers(["podman", "info"]):
        return "podman"
    return None


def qualified(reference: str) -> str:
    """`python:3.12-slim` as engines store it: `docker.io/library/python:3.12-slim`."""
    first, _, rest = reference.partition("/")
    if not rest:
        return f"docker.io/library/{reference}"
    if "." in first or ":" in first or first == "localhost":
        return reference
    return f"docker.io/{reference}"


def base_image(bento_dir: Path) -> str:
    """The image the bento's generated Dockerfile starts FROM (its first FROM)."""
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    match = re.search(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", dockerfile, flags=re.MULTILINE)
    if match is None:
        raise SystemExit(f"no FROM in {bento_dir}/env/docker/Dockerfile")
    return qualified(match.group(1))


def run(command: list[str], *, timeout: float, cwd: Path = ROOT) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, env=engine_env(), timeout=timeout, check=True)


def inspect_image(engine: str, image: str, template: str) -> str:
    """``engine image inspect --format template image``: one field of a local image."""
    return subprocess.run(
        [engine, "image", "inspect", "--format", template, image],
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def is_stand_in(engine: str, image: str) -> bool:
    labels = inspect_image(engine, image, "{{json .Config.Labels}}")
    return "offline-test-stand-in" in (json.loads(labels) or {}).get(STAND_IN_LABEL, "")


def image_size(engine: str, image: str) -> int:
    """The local image's size in bytes, as the engine reports it."""
    return int(inspect_image(engine, image, "{{.Size}}"))


def ensure_base(engine: str, image: str) -> bool:
    """Make `image` available locally: already there, pulled, or the offline stand-in. True if a stand-in."""
    if answers([engine, "image", "inspect", image]):
        if is_stand_in(engine, image):  # rebuilt when scripts/base_image.sh changed since it was made
            run(["bash", str(ROOT / "scripts" / "base_image.sh"), image], timeout=1200)
    elif answers([engine, "pull", "-q", image]):
        print(f"pulled {image}", flush=True)
    else:
        print(f"cannot pull {image} (no registry reachable?): building the offline stand-in", flush=True)
        run(["bash", str(ROOT / "scripts" / "base_image.sh"), image], timeout=1200)
    stand_in = is_stand_in(engine, image)
    if stand_in:
        print(f"NOTE: {image} is the offline stand-in (scripts/base_image.sh): for tests only, never push this image")
    return stand_in


def build(bento: str = "housing-price-service:latest", engine: str | None = None) -> Image:
    import bentoml  # slow to import: only when building

    engine = engine or backend()
    if engine is None:
        raise SystemExit("neither a docker engine nor podman answers here: cannot build the image")
    found = bentoml.get(bento)
    name, version = found.tag.name, found.tag.version
    base = base_image(Path(found.path))
    started = time.monotonic()
    stand_in = ensure_base(engine, base)
    base_seconds = round(time.monotonic() - started, 1)
    tags = (f"{name}:{version}", f"{name}:latest")
    command = [str(BIN / "bentoml"), "containerize", f"{name}:{version}", "--backend", engine]
    for tag in tags:
        command += ["-t", tag]
    command += ["--opt", "network=host"]  # the build's package installs use the host's network settings
    if engine == "podman":
        command += ["--opt", "format=docker"]
    started = time.monotonic()
    run(command, cwd=Path("/"), timeout=1800)
    build_seconds = round(time.monotonic() - started, 1)
    image = Image(engine, f"{name}:{version}", tags, base, stand_in, base_seconds, build_seconds)
    print(json.dumps(asdict(image)), flush=True)
    return image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bento", default="housing-price-service:latest", help="the bento to containerize")
    parser.add_argument("--backend", choices=("docker", "podman"), help="default: docker if it answers, else podman")
    args = parser.parse_args(argv)
    build(args.bento, args.backend)


if __name__ == "__main__":
    main()
