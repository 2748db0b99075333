"""What a job's params look like in Snakemake's HTML report, without changing what they are.

Snakemake's report prints every param of a figure's or table's job under "Job parameters" as
``name=str(value)``; for the analysis rules that is a dict of input paths and hashes (the
expectations each input is checked against) or the whole config, thousands of characters a
reader cannot use. :class:`Shown` is a dict whose ``str`` is a short sentence, while everything
that uses the value sees a plain dict:

- Snakemake's rerun tracking serialises params with ``repr``, which stays ``dict.__repr__``, so
  wrapping a param changes no recorded param and reruns nothing;
- a rule's script receives its params pickled (the preamble unpickles them before the script
  can put the repository on ``sys.path``), and a Shown pickles as a plain dict, so scripts in a
  conda environment without this package still unpickle it;
- json, ``==`` and every dict method behave as for the dict it wraps.
"""

from __future__ import annotations


class Shown(dict):
    """A dict shown as ``text`` in the report (see the module docstring)."""

    def __init__(self, value: dict, text: str):
        super().__init__(value)
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __reduce__(self):  # unpickles as the plain dict it wraps
        return (dict, (dict(self),))


def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 40)


def brief(value: dict, what: str) -> Shown:
    """``value`` shown as its short scalar entries; the long or nested ones are named only."""
    short = [f"{k}={v}" for k, v in value.items() if _scalar(v)]
    long = [k for k, v in value.items() if not _scalar(v)]
    text = ", ".join(short) + (f" (and {', '.join(long)})" if long else "")
    return Shown(value, f"{what}: {text}" if text else what)


def expectations(value: dict) -> Shown:
    """The expectations of a job's inputs (path -> {spec_hash, data_hash, code_version}), or of
    its one input (nondet.io.files.job_expect)."""
    if "spec_hash" in value:
        return Shown(value, "the spec, data and code hashes its input must carry (checked when read)")
    n = len(value)
    inputs = f"{n} input{'s' * (n != 1)}"
    return Shown(value, f"the spec, data and code hashes each of its {inputs} must carry (checked when read)")


def whole_config(config: dict) -> Shown:
    """The validated config (the provenance job's param, so any edit reruns it)."""
    name = config.get("experiment")
    return Shown(config, f"the whole validated config, experiment {name!r} (written to provenance.csv)")
