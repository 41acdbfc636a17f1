"""Sub-commands of `jaxdeid`; one module each, discovered by `jaxdeid.cli`."""
