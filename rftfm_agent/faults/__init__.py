"""Fault injectors: the 16 fault types of our taxonomy (README), each injected through a real hook
into training.

One module per family: `reward` (RF: reward-function wrappers), `generation` (PG: the trainer's
generation settings), `optimization` (OD: optimizer, KL coefficient, gradient hooks), `credit` (CA:
advantages and reward attachment), `environment` (TE: the tool environment). Nothing edits a logged
number after the fact: each fault changes what training does, and the metrics move because of it.

Each injector is a `TrainerHook` (`rftfm_agent/testbed/hooks.py`); `registry` lists them all and turns a
`FaultSpec` into the hooks the runner takes:

    hooks = registry.hooks_for(FaultSpec(family="RF", type="rf_noise", strength="easy", onset_step=10))
"""
