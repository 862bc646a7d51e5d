"""Install an accelerator's compile-only wheels into a private folder, for the lowering tests.

    python tests/sharding/private_site.py tpu .cache/libtpu-site    (libtpu, ~210 MB)
    python tests/sharding/private_site.py cuda .cache/cuda-site     (jax-cuda12-plugin + -pjrt, ~180 MB)

The wheels are the ones the installed jax asks for (its `tpu` extra's libtpu; the CUDA 12
plugin of jax's own version). They go into FOLDER with `pip install --target`, never into the
environment: an importable libtpu or CUDA plugin makes every JAX process of the environment try
to start that accelerator (and log its failure). Only the subprocesses of
tests/sharding/test_tpu_aot.py and test_cuda_lowering.py put FOLDER on their path. The folder
is replaced whole when jax asks for other versions; an install that cannot reach an index
leaves no folder behind and exits 0, so the tests skip and say why.
"""

from __future__ import annotations

import enum
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

STAMP = "REQUIREMENTS"  # written last: a folder without it is not a finished install


class Kind(str, enum.Enum):
    TPU = "tpu"
    CUDA = "cuda"


# The package folder each kind's test looks for in the site.
PACKAGES = {Kind.TPU: "libtpu", Kind.CUDA: "jax_cuda12_plugin"}
# Where the Makefile puts them (the repository's ignored .cache/), and the variables naming another folder.
DEFAULT_FOLDERS = {Kind.TPU: ".cache/libtpu-site", Kind.CUDA: ".cache/cuda-site"}
ENV = {Kind.TPU: "TEI_JAX_LIBTPU_SITE", Kind.CUDA: "TEI_JAX_CUDA_SITE"}
REPO = Path(__file__).resolve().parents[2]


def installed_site(kind: Kind) -> Path | None:
    """The private folder holding `kind`'s wheels ($TEI_JAX_LIBTPU_SITE / $TEI_JAX_CUDA_SITE,
    else the Makefile's .cache/ folder), or None when it does not hold them."""
    folder = Path(os.environ.get(ENV[kind]) or REPO / DEFAULT_FOLDERS[kind])
    return folder if (folder / PACKAGES[kind]).is_dir() else None


def requirements(kind: Kind) -> list[str]:
    """The wheels matching the installed jax."""
    version = importlib.metadata.version("jax")
    if kind is Kind.TPU:
        for requirement in importlib.metadata.requires("jax") or []:
            spec, _, marker = requirement.partition(";")
            if spec.strip().startswith("libtpu") and "tpu" in marker:
                return [spec.strip()]
        raise SystemExit(f"jax {version} names no libtpu in its tpu extra")
    return [f"jax-cuda12-plugin=={version}", f"jax-cuda12-pjrt=={version}"]


def ready(folder: Path, kind: Kind) -> bool:
    """Whether `folder` holds a finished install of what the installed jax asks for."""
    stamp = folder / STAMP
    return stamp.is_file() and stamp.read_text().split() == requirements(kind)


def install(kind: Kind, folder: Path) -> bool:
    """Install (or keep) the wheels in `folder`; False when pip could not get them."""
    if ready(folder, kind):
        return True
    wanted = requirements(kind)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
               "--timeout", "20", "--retries", "1", "--target", str(partial), *wanted]
    print(f"installing {' '.join(wanted)} into {folder} (private to the lowering tests)", flush=True)
    if subprocess.run(command).returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        print(f"could not install {' '.join(wanted)}: the tests that need them will skip", flush=True)
        return False
    (partial / STAMP).write_text("\n".join(wanted) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return True


def main() -> None:
    kind, folder = Kind(sys.argv[1]), Path(sys.argv[2])
    folder.parent.mkdir(parents=True, exist_ok=True)
    install(kind, folder)


if __name__ == "__main__":
    main()
