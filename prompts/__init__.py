"""Prompt templates for the agent, kept as text files and installed as `rftfm_agent.prompts`.

Read them with `rftfm_agent.resources.prompt_text(name)`.
"""
