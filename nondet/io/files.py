"""The HDF5 files the stages pass along, one kind after another, each with its reader: data set,
trained replicas (and their checkpoints), predictions, metric rows, divergence records. Every
reader checks that the file was made by the job spec this run expects (nondet.io.h5io.open_input).
No torch here: the analysis environment reads these files too."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from nondet.io import h5io
from nondet.io.checksums import file_sha256
from nondet.io.h5io import InputError, atomic_h5, open_input, provenance

#: The arrays of a data set file, in the order its contents hash reads them.
DATASET_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _expectations(paths, expect) -> list:
    """``expect`` (None, a list aligned with ``paths``, or a dict keyed by path) as a list."""
    if expect is None:
        return [None] * len(paths)
    if isinstance(expect, dict):
        return [expect.get(str(p)) for p in paths]
    if len(expect) != len(paths):
        raise InputError(f"{len(paths)} input files but {len(expect)} expected job specs")
    return list(expect)


def accelerator(device) -> dict:
    """The hardware of a torch job's replicas, for provenance: ``{"name": "cpu"}``, or the GPU's
    name and compute capability (a resumed or rerun job on another GPU type rounds differently)."""
    if not str(device).startswith("cuda"):
        return {"name": "cpu"}
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {"name": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}"}


def job_provenance(kind: str, job: dict, device, **extra) -> dict:
    """Provenance of an output made by a training-type job (its whole spec, device, hashes)."""
    return provenance(
        kind=kind,
        job=job,
        device=str(device),
        accelerator=accelerator(device),
        experiment=job["experiment"],
        spec_hash=job["spec_hash"],
        data_hash=job["data_hash"],
        **extra,
    )


def write_dataset(out_path, prov: dict, arrays: dict) -> None:
    """The data set: x_train, y_train, x_test, y_test (uint8 images stay uint8)."""
    with atomic_h5(out_path, prov) as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)


def arrays_sha256(arrays: dict) -> str:
    """SHA-256 of a data set's contents: every array's name, dtype, shape and bytes, in
    DATASET_KEYS order (the identity of a data set whatever file or loader it came from)."""
    h = hashlib.sha256()
    for k in DATASET_KEYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))  # the bytes, without a copy
    return h.hexdigest()


def _refuse_rewritten(path, spec: dict, expected_hash: str) -> None:
    """An ``arrays`` file rewritten after the data set ``path`` was made from it (the hash this
    job expects is that of the same config section with the file's new contents): said so."""

    if spec.get("name") != "arrays":
        return
    sha = file_sha256(spec["path"])
    if sha is None:
        return
    if h5io.spec_hash({**spec, "file_sha256": sha}) == expected_hash:
        raise InputError(
            f"dataset.path {spec['path']} was rewritten after the data set {path} was made from it "
            f"(its SHA-256 is now {sha}), so this job was planned for the new contents: rerun the "
            "workflow, which remakes the data set and retrains from it (do not rewrite the file "
            "while a run uses it)"
        )


def read_dataset(path, expected_hash: str) -> tuple[dict, dict, str]:
    """The data set file's (dataset spec, arrays, contents SHA-256), checked against the
    data_hash this run expects and against the contents hash recorded when it was made
    (nondet.training.data.load_dataset turns it into tensors)."""
    with open_input(path, "dataset") as f:
        if str(f.attrs.get("data_hash")) != expected_hash:
            _refuse_rewritten(path, json.loads(f.attrs["provenance"]).get("dataset") or {}, expected_hash)
            raise InputError(
                f"data set {path} was made from a different dataset config "
                f"(data_hash {f.attrs.get('data_hash')} != {expected_hash}); rerun its rule"
            )
        arrays = {k: f[k][()] for k in DATASET_KEYS}
        prov = json.loads(f.attrs["provenance"])
    content = arrays_sha256(arrays)
    if prov.get("content_sha256", content) != content:
        raise InputError(
            f"data set {path} is damaged: its arrays' SHA-256 {content} differs from the "
            f"{prov['content_sha256']} recorded when it was made; " + h5io.remake_hint(path)
        )
    return prov["dataset"], arrays, content


def checkpoint_dir(out_path) -> Path:
    """Hidden folder beside a training output that holds its replicas' resumable state."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.name}.checkpoints")


def checkpoints_for(ckpt_dir: Path, job: dict, log=print, content_sha256: str | None = None) -> None:
    """Make ``ckpt_dir`` hold only checkpoints of ``job`` on the data set whose arrays have the
    SHA-256 ``content_sha256``: checkpoints left by any other job spec (other data, code version,
    settings or experiment name) or made on other data contents are deleted, saying why."""
    key = {"spec_hash": job["spec_hash"], "data_hash": job["data_hash"], "code_version": h5io.CODE_VERSION}
    if content_sha256 is not None:
        key["content_sha256"] = content_sha256
    key_file = ckpt_dir / "job.json"
    if ckpt_dir.exists():
        try:
            old = json.loads(key_file.read_text())
        except (OSError, ValueError):
            old = None
        if old != key:
            why = (
                "they carry no job key"
                if not isinstance(old, dict)
                else "; ".join(f"{k} {old.get(k)} != {v}" for k, v in key.items() if old.get(k) != v)
            )
            log(f"ignoring the checkpoints in {ckpt_dir}: another job spec wrote them ({why}); training from the start")
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(json.dumps(key))


def write_replicas(out_path, prov: dict, results) -> None:
    """Trained replicas: one group per replica (weights, curve, snapshots, seeds, what was
    perturbed); ``results`` holds (replica, seeds, training result, absorbed flip or None)."""
    with atomic_h5(out_path, prov) as f:
        for r, seeds, res, absorbed_flip in results:
            g = f.create_group(f"replica_{r:04d}")
            g.attrs["replica"] = r
            g.attrs["seeds"] = json.dumps(seeds.as_dict())
            g.attrs["deterministic"] = seeds.deterministic
            g.attrs["kernels_mode"] = res["kernels_mode"]
            g.attrs["bitflip"] = json.dumps(res["bitflip"])
            g.attrs["absorbed"] = -1 if absorbed_flip is None else int(absorbed_flip)
            g.attrs["diverged"] = res["diverged"]
            g.attrs["seconds"] = res["seconds"]
            h5io.write_dict(g.create_group("weights"), res["state"])
            h5io.write_dict(g.create_group("curve"), res["curve"])
            for c, snap in enumerate(res["snapshots"]):
                h5io.write_dict(g.create_group(f"snapshots/{c}"), snap)
            for kind, state in res.get("averaged", {}).items():  # EMA / SWA weights (recipe.averages)
                h5io.write_dict(g.create_group(f"averaged/{kind}"), state)


def load_replicas(path, expect: dict | None = None) -> list[dict]:
    """Replicas of a training file: weights, curve and attributes."""
    out = []
    with open_input(path, "train", expect) as f:
        prov = json.loads(f.attrs["provenance"])
        job = prov["job"]
        for name in sorted(k for k in f if k.startswith("replica_")):
            g = f[name]
            out.append(
                {
                    "replica": int(g.attrs["replica"]),
                    "seeds": json.loads(g.attrs["seeds"]),
                    "kernels_mode": str(g.attrs["kernels_mode"]),
                    "diverged": bool(g.attrs["diverged"]),
                    "bitflip": json.loads(g.attrs["bitflip"]),
                    "absorbed": int(g.attrs.get("absorbed", -1)),
                    "weights": h5io.read_dict(g["weights"]),
                    "snapshots": [h5io.read_dict(g["snapshots"][c]) for c in sorted(g.get("snapshots", {}), key=int)],
                    "averaged": {kind: h5io.read_dict(a) for kind, a in g.get("averaged", {}).items()},
                    "curve": h5io.read_dict(g["curve"]),
                    "job": job,
                    "content_sha256": prov.get("content_sha256"),  # None: made before it was kept
                }
            )
    return out


def check_replicas(path, job, have) -> None:
    """A training or prediction file must hold exactly the replicas its job spec lists (``have``:
    the indices it holds); raises InputError naming the file and each missing or extra one."""
    if not isinstance(job, dict) or "replicas" not in job:  # imported runs list no replicas
        return
    want = [int(r) for r in job["replicas"]]
    if sorted(have) == sorted(want):
        return
    missing = [r for r in want if r not in have]
    extra = [r for r in have if r not in want]
    what = "; ".join(
        ([f"lacks replica(s) {', '.join(map(str, missing))}"] if missing else [])
        + ([f"holds replica(s) {', '.join(map(str, extra))} its job does not list"] if extra else [])
    )
    raise InputError(
        f"input file {path} {what} (its job lists replicas {want}, the file holds {sorted(have)}): "
        f"it is incomplete or was edited; {h5io.remake_hint(path)}"
    )


def job_expect(job: dict, **extra) -> dict:
    """What an output made from ``job`` carries (nondet.io.h5io.atomic_h5 writes these
    attributes; nondet.io.h5io.open_input refuses an input whose values differ)."""
    return {"spec_hash": job["spec_hash"], "data_hash": job["data_hash"], "code_version": job["code_version"], **extra}


def write_predictions(out_path, prov: dict, logits, features, labels, replicas, method: str, passes: int) -> None:
    """Test-set logits and penultimate features of every replica of a training file."""
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("logits", data=np.stack(logits).astype(np.float32))
        f.create_dataset("features", data=np.stack(features).astype(np.float32))
        f.create_dataset("labels", data=labels)
        f.create_dataset("replicas", data=[r["replica"] for r in replicas])
        f.create_dataset("diverged", data=[r["diverged"] for r in replicas])
        # 1: the one-ulp flip was absorbed, 0: it survived, -1: no flip or not checked
        f.create_dataset("absorbed", data=np.array([r["absorbed"] for r in replicas], dtype=np.int8))
        f.attrs["kernels_mode"] = replicas[0]["kernels_mode"] if replicas else ""
        f.attrs["method"] = method
        f.attrs["test_passes"] = passes


def load_predictions(paths, expect=None) -> dict:
    """Prediction files, concatenated; ``expect``: what each must carry (see _expectations)."""
    h5io.check_same_experiment(paths, "data_hash")
    parts = []
    for p, e in zip(paths, _expectations(paths, expect)):
        with open_input(p, "predict", e) as f:
            parts.append(
                {
                    "logits": f["logits"][()],
                    "features": f["features"][()],
                    "labels": f["labels"][()],
                    "replicas": f["replicas"][()],
                    "diverged": f["diverged"][()],
                    "absorbed": f["absorbed"][()] if "absorbed" in f else np.full(len(f["replicas"]), -1),
                    "kernels_mode": str(f.attrs["kernels_mode"]),
                    "method": str(f.attrs.get("method", "plain")),
                    "test_passes": int(f.attrs.get("test_passes", 1)),
                    "cka_on": str(f.attrs.get("cka_on", "")),  # set by imported runs (nondet.io.runs)
                    # a script's rows trained under audit: warn after a failed audit (nondet.workflow.script)
                    "audit_failed": str(f.attrs.get("audit_failed", "")),
                    "prov": json.loads(f.attrs["provenance"]),
                }
            )
    for p, part in zip(paths, parts):
        check_replicas(p, part["prov"].get("job"), [int(r) for r in part["replicas"]])
    contents = {
        str(p): part["prov"]["content_sha256"] for p, part in zip(paths, parts) if part["prov"].get("content_sha256")
    }
    if len(set(contents.values())) > 1:
        lines = "\n".join(f"  {p}: {v}" for p, v in contents.items())
        raise InputError(f"predictions made on different data contents (content_sha256 differs):\n{lines}")
    labels = parts[0]["labels"]
    for p, part in zip(paths, parts):
        if part["labels"].shape != labels.shape or not np.array_equal(part["labels"], labels):
            raise InputError(f"{p} was predicted on a different test set")
    return {
        "logits": np.concatenate([p["logits"] for p in parts]),
        "features": np.concatenate([p["features"] for p in parts]),
        "labels": labels,
        "replicas": np.concatenate([p["replicas"] for p in parts]),
        # which file (training job) each replica came from: kernel nondeterminism measured
        # within and across jobs (nondet.analysis.identical.measured_kernels_mode)
        "job_index": np.concatenate([np.full(len(p["replicas"]), i) for i, p in enumerate(parts)]),
        "diverged": np.concatenate([p["diverged"] for p in parts]).astype(bool),
        "absorbed": np.concatenate([p["absorbed"] for p in parts]).astype(np.int8),
        "kernels_mode": parts[0]["kernels_mode"],
        "method": parts[0]["method"],
        "test_passes": parts[0]["test_passes"],
        "cka_on": parts[0]["cka_on"],
        "audit_failed": next((p["audit_failed"] for p in parts if p["audit_failed"]), ""),
        "job": parts[0]["prov"]["job"],
        "device": parts[0]["prov"]["device"],
    }


def kept_replicas(diverged, replicas, group: str, on_diverged: str, log=None) -> np.ndarray:
    """The one diverged-replica policy of every stage (config metrics.on_diverged): the mask of
    the replicas to keep. ``fail`` raises naming ``group`` and its diverged replicas; ``exclude``
    drops them and logs which (``log``: a function taking a line, e.g. a logger's warning)."""
    diverged = np.asarray(diverged, dtype=bool)
    if on_diverged not in ("exclude", "fail"):
        raise ValueError(f"on_diverged must be exclude or fail, got {on_diverged!r}")
    if diverged.any():
        names = ", ".join(str(r) for r in np.asarray(replicas)[diverged])
        if on_diverged == "fail":
            raise InputError(
                f"{group}: {diverged.sum()} replica(s) diverged (loss NaN/inf): {names}; "
                "set metrics.on_diverged: exclude to drop them"
            )
        if log is not None:
            log(f"{group}: EXCLUDING {diverged.sum()} diverged replica(s): {names}")
    return ~diverged


def write_metrics(out_path, prov: dict, row: dict, arrays: dict, replicas, diverged_replicas) -> None:
    """One (model, condition)'s table row, per-model values and pair matrices."""
    with atomic_h5(out_path, prov) as f:
        f.attrs["row"] = json.dumps(row)
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.create_dataset("replicas", data=replicas)
        f.create_dataset("diverged_replicas", data=diverged_replicas)


def load_rows(metric_paths, expect=None) -> list[dict]:
    rows = []
    for p, e in zip(metric_paths, _expectations(metric_paths, expect)):
        with open_input(p, "metrics", e) as f:
            rows.append(json.loads(f.attrs["row"]))
    return rows


def write_divergence(out_path, prov: dict, steps, steps_per_epoch: int, records: dict) -> None:
    """Twin runs against their base run at the recorded steps: one group per run."""
    with atomic_h5(out_path, prov) as f:
        f.create_dataset("steps", data=steps)
        f.attrs["steps_per_epoch"] = steps_per_epoch
        for name, rec in records.items():
            g = f.create_group(name)
            for key in ("condition", "absorbed", "zero_from_step"):
                if key in rec:
                    g.attrs[key] = rec[key]
            for key in ("seeds", "bitflip"):
                g.attrs[key] = json.dumps(rec[key])
            for key in ("distance", "disagreement", "test_acc"):
                g.create_dataset(key, data=rec[key])


def load_divergence(path, expect: dict | None = None) -> dict:
    with open_input(path, "divergence", expect) as f:
        out = {"steps": f["steps"][()], "model": json.loads(f.attrs["provenance"])["job"]["model"]}
        out["steps_per_epoch"] = int(f.attrs["steps_per_epoch"])
        out["runs"] = {
            name: {
                "condition": str(f[name].attrs["condition"]),
                "distance": f[name]["distance"][()],
                "disagreement": f[name]["disagreement"][()],
                "zero_from_step": int(f[name].attrs.get("zero_from_step", -1)),
            }
            for name in f
            if name != "steps"
        }
    return out
