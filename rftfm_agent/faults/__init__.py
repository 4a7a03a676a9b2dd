"""Fault injectors: the 16 fault types of DESIGN §3, each injected through a real hook into training.

One module per family: `reward` (RF: reward-function wrappers), `generation` (PG: the trainer's
generation settings), `optimization` (OD: optimizer, KL coefficient, gradient hooks), `credit` (CA:
advantages and reward attachment), `environment` (TE: the tool environment). Nothing edits a logged
number after the fact: each fault changes what training does, and the metrics move because of it.

    injector = make_injector(FaultSpec(family="RF", type="rf_noise", strength="easy", onset_step=10))
"""

from rftfm_agent.faults import credit, environment, generation, optimization, reward
from rftfm_agent.faults.base import FaultRuntime, Injector, make_injector, registry

FAMILY_MODULES = {"RF": reward, "PG": generation, "OD": optimization, "CA": credit, "TE": environment}

__all__ = ["FAMILY_MODULES", "FaultRuntime", "Injector", "make_injector", "registry"]
