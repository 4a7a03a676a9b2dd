"""The playbook: for each diagnosed fault type (and a few symptoms), ranked candidate fixes, each with
why and a reference, as data.

A candidate is one or more actions applied together (e.g. a gradient guard and skipping the batches that
produced the NaN). Action fields may name values from the run instead of literals:

    "$configured.<knob>"        the knob's value when supervision started (the user's configuration)
    "$current.<knob>"           its value at the incident
    "$current.<knob>*<factor>"  scaled
    "$offending_steps"          steps whose update was not finite (rolled back and skipped on resume)

`when` says when a candidate applies; every condition must hold:

    "changed:<knob>"      the knob's value at the incident differs from its configured value
    "unchanged:<knob>"    it does not
    "fallback_reward"     the user registered a fallback reward function
    "tools"               the run calls tools
    "offending_steps"     some updates were not finite
    "kl_penalty"          the run was configured with β > 0 (a run built with β = 0 has no reference
                          model, so no KL penalty can be turned on mid-run)

What practitioners learned is encoded here, not in code: a lower learning rate does not fix reward hacking
(only the verifier does: a fallback reward, else a person); zero-variance groups have opposite fixes for
data that is too easy and data that is too hard (both are data changes a person approves); with entropy
collapse and KL explosion together, fix the entropy first.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

PLAYBOOK_VERSION = 1


class CandidateTemplate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    actions: list[dict[str, Any]] = Field(min_length=1)
    why: str
    reference: str
    when: list[str] = Field(default_factory=list)


class Play(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    applies_to: str = Field(description="a fault type, or 'symptom:<name>'")
    summary: str
    candidates: list[CandidateTemplate]


ESCALATE_REF = "rftfm DESIGN.md §7: the agent proposes, rules decide; what no rule can fix goes to a person"
REWARD_HACKING_REF = (
    "Skalse et al. 2022, 'Defining and Characterizing Reward Hacking' (NeurIPS); Gao, Schulman & Hilton "
    "2023, 'Scaling Laws for Reward Model Overoptimization' (ICML): optimising a flawed reward harder or "
    "slower still optimises the flaw"
)
FALLBACK = CandidateTemplate(
    actions=[{"kind": "fallback_reward", "name": "$fallback"}],
    why="the reward function itself is wrong: switch to the fallback verifier the user registered",
    reference=REWARD_HACKING_REF,
    when=["fallback_reward"],
)


def _escalate(reason: str) -> CandidateTemplate:
    return CandidateTemplate(
        actions=[{"kind": "escalate", "reason": reason}], why=reason, reference=ESCALATE_REF
    )


REWARD_ESCALATE = _escalate(
    "the reward function is wrong and no fallback reward is registered: a lower learning rate would only "
    "slow the run down on the wrong signal; fix or replace the verifier"
)

RESTORE_CAP = CandidateTemplate(
    actions=[
        {
            "kind": "set_completion_length",
            "max_completion_length": "$configured.max_completion_length",
            "mask_truncated": True,
        }
    ],
    why="the length cap was lowered mid-run: restore it, and keep cut completions out of the loss",
    reference="TRL GRPOConfig docs: `max_completion_length`, `mask_truncated_completions`",
    when=["changed:max_completion_length"],
)
RAISE_CAP = CandidateTemplate(
    actions=[
        {
            "kind": "set_completion_length",
            "max_completion_length": "$current.max_completion_length*2",
            "mask_truncated": True,
        }
    ],
    why="answers do not fit: raise the cap and mask truncated completions (overlong filtering)",
    reference="Yu et al. 2025, DAPO (arXiv:2503.14476) §3.4: overlong filtering of truncated samples",
    when=["unchanged:max_completion_length"],
)
RESTORE_TEMPERATURE = CandidateTemplate(
    actions=[{"kind": "set_sampling", "temperature": "$configured.temperature"}],
    why="the sampling temperature changed mid-run: restore the configured value",
    reference="TRL GRPOConfig docs: `temperature` (default 1.0) sets the sampler's randomness",
    when=["changed:temperature"],
)
RESTORE_LR = CandidateTemplate(
    actions=[{"kind": "set_learning_rate", "value": "$configured.learning_rate"}],
    why="the learning rate changed mid-run: restore the configured value",
    reference="HF Trainer docs: the optimizer and scheduler state restored on resume carry the learning "
    "rate; a changed one persists until set",
    when=["changed:learning_rate"],
)
RESTORE_BETA = CandidateTemplate(
    actions=[{"kind": "set_kl_coefficient", "beta": "$configured.beta"}],
    why="β changed mid-run (a sign bug or a huge value): restore the configured coefficient",
    reference="TRL GRPO docs: `beta`, the KL coefficient; Ouyang et al. 2022 (InstructGPT): the KL penalty "
    "keeps the policy near the reference",
    when=["changed:beta"],
)
GRADIENT_GUARD = CandidateTemplate(
    actions=[{"kind": "gradient_guard", "max_grad_norm": 1.0, "skip_nonfinite": True, "spike_factor": 10}],
    why="clip gradients and skip updates that are not finite or spike far above recent ones",
    reference="Pascanu, Mikolov & Bengio 2013, 'On the difficulty of training recurrent neural networks' "
    "(ICML): gradient norm clipping",
)

PLAYS: list[Play] = [
    *[
        Play(applies_to=t, summary=s, candidates=[FALLBACK, REWARD_ESCALATE])
        for t, s in (
            ("rf_sign_flip", "rewards negated for part of the samples"),
            ("rf_noise", "the verifier's verdicts are noisy"),
            ("rf_sparse", "rewards withheld for part of the groups"),
            ("rf_hackable", "the verifier pays a shortcut: reward rises while accuracy does not"),
        )
    ],
    Play(
        applies_to="pg_temperature",
        summary="sampling temperature far from the configured one",
        candidates=[
            RESTORE_TEMPERATURE,
            CandidateTemplate(
                actions=[{"kind": "set_sampling", "temperature": 1.0}],
                why="sample at temperature 1.0, the policy's own distribution, as GRPO and DAPO do",
                reference="Yu et al. 2025, DAPO (arXiv:2503.14476) §4: temperature 1.0 for rollouts",
                when=["unchanged:temperature"],
            ),
            _escalate("sampling is off and restoring the temperature did not help"),
        ],
    ),
    Play(
        applies_to="pg_truncation",
        summary="completions cut at the length limit",
        candidates=[RESTORE_CAP, RAISE_CAP, _escalate("completions still hit the cap")],
    ),
    Play(
        applies_to="pg_degenerate",
        summary="completions run on without ending (repetition, no end-of-sequence)",
        candidates=[
            CandidateTemplate(
                actions=[
                    {"kind": "set_sampling", "clear_token_bias": True},
                    {"kind": "set_completion_length", "mask_truncated": True},
                ],
                why="the sampler suppresses or biases tokens it was not configured to: clear it and mask "
                "completions that never ended",
                reference="transformers GenerationConfig docs: `suppress_tokens`, `sequence_bias`; "
                "DAPO (arXiv:2503.14476) §3.4 overlong filtering",
                when=["changed:token_bias"],
            ),
            CandidateTemplate(
                actions=[
                    {"kind": "set_completion_length", "mask_truncated": True},
                    {"kind": "trajectory_filter", "degenerate": True},
                ],
                why="keep never-ending and repetitive completions out of the loss so they are not reinforced",
                reference="Yu et al. 2025, DAPO (arXiv:2503.14476) §3.4: overlong filtering",
            ),
            _escalate("generation stays degenerate"),
        ],
    ),
    Play(
        applies_to="od_lr",
        summary="learning rate far from what the run can take",
        candidates=[
            RESTORE_LR,
            CandidateTemplate(
                actions=[{"kind": "set_learning_rate", "value": "$current.learning_rate*0.5"}],
                why="updates too large for the policy: halve the learning rate and resume from before the "
                "incident",
                reference="Andrychowicz et al. 2021, 'What Matters in On-Policy RL' (ICLR): the learning "
                "rate is the most sensitive setting",
                when=["unchanged:learning_rate"],
            ),
            _escalate("the learning rate is not the cause or cannot be fixed within the policy's bounds"),
        ],
    ),
    Play(
        applies_to="od_kl",
        summary="the KL penalty is wrong: the policy drifts or is frozen",
        candidates=[
            RESTORE_BETA,
            CandidateTemplate(
                actions=[{"kind": "set_kl_coefficient", "beta": 0.04}],
                why="use the KL coefficient GRPO was published with",
                reference="Shao et al. 2024, DeepSeekMath (arXiv:2402.03300) §4.1: β = 0.04",
                when=["unchanged:beta", "kl_penalty"],
            ),
            _escalate("KL stays out of range"),
        ],
    ),
    Play(
        applies_to="od_grad",
        summary="gradients corrupted: spikes, NaN/Inf, or clipping disabled",
        candidates=[
            CandidateTemplate(
                actions=[
                    {
                        "kind": "gradient_guard",
                        "max_grad_norm": 1.0,
                        "skip_nonfinite": True,
                        "spike_factor": 10,
                    },
                    {"kind": "skip_updates", "steps": "$offending_steps"},
                ],
                why="roll back to before the blow-up and skip the offending batches (a rollback alone "
                "replays the same batch and the same NaN), then clip and skip non-finite or spiking updates",
                reference="Chowdhery et al. 2022, PaLM (arXiv:2204.02311) §5.1: restart from a checkpoint "
                "before the spike and skip the batches around it",
                when=["offending_steps"],
            ),
            GRADIENT_GUARD,
            _escalate("gradients stay corrupted"),
        ],
    ),
    Play(
        applies_to="od_optimizer_reset",
        summary="optimizer state lost (as after a bad resume)",
        candidates=[
            CandidateTemplate(
                actions=[
                    {"kind": "set_learning_rate", "value": "$configured.learning_rate"},
                    {"kind": "reset_optimizer", "warmup_steps": 5, "rewarm_on_state_loss": True},
                ],
                why="the optimizer was rebuilt with other settings: restore the learning rate, and warm it "
                "up again whenever the moments are lost",
                reference="Liu et al. 2020, RAdam (ICLR), §3: Adam's adaptive rate has large variance "
                "until its moments have seen enough steps; warm-up bounds it",
                when=["changed:learning_rate"],
            ),
            CandidateTemplate(
                actions=[{"kind": "reset_optimizer", "warmup_steps": 5, "rewarm_on_state_loss": True}],
                why="warm the learning rate up again after the optimizer's moments are lost",
                reference="Liu et al. 2020, RAdam (ICLR), §3; Kingma & Ba 2015, Adam: bias correction",
            ),
            _escalate("optimizer state keeps being lost"),
        ],
    ),
    *[
        Play(
            applies_to=t,
            summary=s,
            candidates=[
                CandidateTemplate(
                    actions=[{"kind": "advantage_guard"}],
                    why="recompute each broken group's advantages from its rewards, as GRPO defines them",
                    reference="Shao et al. 2024, DeepSeekMath (arXiv:2402.03300) §4.1.2: group-relative "
                    "advantage = (r − mean) / std",
                ),
                _escalate("advantages stay inconsistent with rewards"),
            ],
        )
        for t, s in (
            ("ca_advantage_sign", "advantages of some groups have the wrong sign"),
            ("ca_baseline", "the group baseline or normalisation is broken"),
        )
    ],
    Play(
        applies_to="ca_group_misalign",
        summary="rewards attached to the wrong completions",
        candidates=[
            CandidateTemplate(
                actions=FALLBACK.actions,
                why="a noisy verifier pays one completion two ways as misaligned batching does (the "
                "fingerprints confuse the two both ways: docs/diagnosis.md); the fallback verifier is the "
                "test between them: it cures a verifier bug, while misaligned batching survives the swap, "
                "which is then undone and escalated",
                reference="rftfm docs/diagnosis.md (rf_noise hard and ca_group_misalign confused both ways) "
                "and README Measured (mini seed 61: rf_noise runs read as misaligned and escalated)",
                when=FALLBACK.when,
            ),
            _escalate(
                "rewards are attached to the wrong completions: a bug in the batching between reward and "
                "completion that no hyperparameter or reward swap fixes"
            ),
        ],
    ),
    Play(
        applies_to="te_tool_error",
        summary="the environment's tool fails",
        candidates=[
            CandidateTemplate(
                actions=[
                    {"kind": "tool_retry", "retries": 3, "backoff_s": 0.0},
                    {"kind": "trajectory_filter", "tool_errors": True},
                ],
                why="retry failed tool calls, and keep samples whose call still failed out of the loss so "
                "the policy is not punished for the environment's failures",
                reference="Beyer et al. 2016, Site Reliability Engineering (O'Reilly), ch. 22: retries with "
                "exponential backoff; Jin et al. 2025, Search-R1 (arXiv:2503.09516) §3.1: environment "
                "tokens are masked from the loss",
                when=["tools"],
            ),
            _escalate("the tool keeps failing"),
        ],
    ),
    Play(
        applies_to="te_tool_corrupt",
        summary="the tool returns wrong results",
        candidates=[
            _escalate("the tool returns wrong results: fix or replace the tool; no filter can see it")
        ],
    ),
    Play(
        applies_to="symptom:no_signal_too_easy",
        summary="groups all solved: no learning signal (data too easy)",
        candidates=[
            CandidateTemplate(
                actions=[{"kind": "trajectory_filter", "zero_variance_groups": True}],
                why="drop zero-variance groups from the loss; the lasting fix is harder prompts (a data "
                "change a person makes)",
                reference="Yu et al. 2025, DAPO (arXiv:2503.14476) §3.2: dynamic sampling filters groups "
                "with accuracy 1 or 0",
            ),
            _escalate("prompts are too easy: add harder data"),
        ],
    ),
    Play(
        applies_to="symptom:length_at_cap",
        summary="nearly every completion cut at the length cap (the answers do not fit, or never end)",
        candidates=[RESTORE_CAP, RAISE_CAP, _escalate("completions still hit the cap")],
    ),
    Play(
        applies_to="symptom:no_signal_too_hard",
        summary="groups all failed: no learning signal (data too hard)",
        candidates=[
            _escalate(
                "prompts are too hard for the policy (every sample fails): add easier data or a warm-up SFT"
            ),
        ],
    ),
    Play(
        applies_to="symptom:reward_hacking",
        summary="the reward rose while the task did not (completions collapsed, or the held-out score stayed "
        "or fell): it pays a shortcut or the wrong thing",
        candidates=[
            _escalate(
                "the reward pays a shortcut: fix the verifier or reward (a stricter check, a fallback "
                "verifier); no data filter or knob can see it"
            )
        ],
    ),
    Play(
        applies_to="symptom:settings_changed",
        summary="a setting differs from its configured value at the incident: restore it first",
        candidates=[
            RESTORE_LR,
            RESTORE_BETA,
            RESTORE_TEMPERATURE,
            RESTORE_CAP,
            _escalate("the run stays broken with its settings restored"),
        ],
    ),
    Play(
        applies_to="symptom:reward_inconsistent",
        summary="the same completion was paid differently within a group: the reward is not a function of "
        "the completion (a noisy, flipped or randomly lenient verifier, or rewards reaching wrong samples)",
        candidates=[
            FALLBACK,
            _escalate(
                "the reward pays one completion two ways and no fallback verifier fixed it (or none is "
                "registered): check the verifier's determinism and how rewards are matched to samples"
            ),
        ],
    ),
    Play(
        applies_to="symptom:gradient_spikes",
        summary="the gradient norm spikes again and again (tens of times its usual level): updates corrupted "
        "or exploding",
        candidates=[GRADIENT_GUARD, _escalate("gradients keep spiking with clipping and spike skipping on")],
    ),
    Play(
        applies_to="symptom:entropy_collapse_kl_explosion",
        summary="entropy collapsed: the sampler stopped exploring (KL often runs away with it)",
        candidates=[
            CandidateTemplate(
                actions=[{"kind": "set_sampling", "temperature": "$configured.temperature"}],
                why="fix entropy first: with the sampler collapsed, KL grows because the policy piles onto "
                "a few tokens; restoring exploration usually brings KL back",
                reference="Cui et al. 2025, 'The Entropy Mechanism of RL for Reasoning Language Models' "
                "(arXiv:2505.22617)",
                when=["changed:temperature"],
            ),
            _escalate("entropy and KL stay out of range"),
        ],
    ),
]

PLAYBOOK: dict[str, Play] = {p.applies_to: p for p in PLAYS}
