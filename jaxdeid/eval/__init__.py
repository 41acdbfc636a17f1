"""The evaluation protocol of the private-image pipeline (Tables 2-4, Figs. 5-6): see `protocol`."""
