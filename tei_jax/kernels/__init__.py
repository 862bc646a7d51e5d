"""Hand-written accelerator kernels (Pallas).

`tei_jax.kernels.flash_attention` holds the flash-attention kernel (`flash_attention`) and its
plain-jnp contract (`reference_attention`). Nothing is imported here, so importing the engine
does not load Pallas; `tei_jax.models.attention.attend` imports the kernel on first use.
"""
