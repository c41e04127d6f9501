"""Training: one fold (``loop``), every fold (``crossval``), comparisons, the run layout."""
