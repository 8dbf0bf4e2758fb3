"""The paper's experiment: orchestration (pipeline), finished stages (manifest), the paper's
claims (claims) and the tables of the report (tables)."""

from w2v_jax.experiment.pipeline import run, run_and_print, summary_text

__all__ = ["run", "run_and_print", "summary_text"]
