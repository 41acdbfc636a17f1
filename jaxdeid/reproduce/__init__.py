"""The paper's tables and figures, regenerated into results/: one module per output.

    jaxdeid reproduce --preset small [--only table3,fig5]   # all of them, or a subset
    python -m jaxdeid.reproduce.table3 --preset small       # one, with its own flags (--help)

These modules sit above the library, beside the commands: they parse flags, train
what is missing through `jaxdeid train ...`, cache private outputs per process, draw
charts and write results with provenance (`common`). The evaluation protocol they
apply (evaluation set, padded-batch runner, success, quality and recognition rates)
is library code in `jaxdeid.eval`.
"""
