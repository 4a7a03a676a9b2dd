"""RFT-FaultBench generation: presets of labelled runs, a parallel resumable generator, the registry, the
fault-effect table and export to the paper's released layout."""
