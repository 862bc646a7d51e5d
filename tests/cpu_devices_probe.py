"""Run in a fresh subprocess by tests/test_cpu_devices.py: set JAX up as a user might, call
tei_jax.load, print what it got as JSON (devices, data size, row multiple, log lines, vectors).

argv[1]: JSON {"folder", "setup": "none" | "jax_config:N" | "started", "load": {kwargs},
"texts": [...]}"""

import json
import logging
import sys

spec = json.loads(sys.argv[1])
records: list[str] = []


class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())


logging.getLogger("tei_jax").addHandler(Keep())
logging.getLogger("tei_jax").setLevel(logging.INFO)

import jax  # noqa: E402

setup = spec.get("setup", "none")
if setup.startswith("jax_config:"):
    jax.config.update("jax_num_cpu_devices", int(setup.split(":")[1]))
elif setup == "started":
    jax.devices()  # the backend starts with JAX's own device count

import tei_jax  # noqa: E402

model = tei_jax.load(spec["folder"], **spec.get("load", {}))
out = {"devices": len(jax.devices()), "data_size": model.placement.data_size,
       "row_multiple": model.engine.policy.row_multiple, "log": records}
if spec.get("texts"):
    out["vectors"] = model.embed(spec["texts"]).tolist()
print(json.dumps(out))
