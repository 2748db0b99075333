"""A toy mitigation method, registered as a plug-in (tests/test_methods.py): one file, and its
config keys as the plug-in's schema entry. It trains a run of its own with ``cycles`` cosine
cycles and predicts with the weights of its last ``last`` cycles (logits averaged)."""

from nondet.methods import Plugin, register

register(
    Plugin(
        "toy",
        "toy: the last cycles' weights of a cyclic run",
        run="toy",
        recipe=lambda mit: {"cycles": mit["toy"]["cycles"]},
        weights=lambda replica: replica["snapshots"][-2:],
        members=lambda row: 2,
        keys=("toy",),
        schema={
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "properties": {"cycles": {"type": "integer", "minimum": 2, "default": 2}},
        },
    )
)
