"""rftfm: automatic failure management for reinforcement fine-tuning of language models.

The package is laid out along the pipeline: telemetry → detect → diagnose → remediate → agent.
"""

__version__ = "0.1.0"
