"""What every stage needs at run time: a log that survives failures, and torch set up for the
job (threads, device, CUDA workspace, a free GPU when the machine has several)."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from pathlib import Path


def get_logger(log_path=None, name="nondet", mode="w") -> logging.Logger:
    """Log lines to the rule's log file and to stderr (plain lines: safe without a terminal)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    for h in logger.handlers:
        h.close()
    logger.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode=mode))
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)
    return logger


def _logs_to(logger: logging.Logger, log_path) -> bool:
    """Whether ``logger`` already writes to ``log_path`` (None: to stderr only)."""
    files = [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]
    if not log_path:
        return bool(logger.handlers) and not files
    return str(Path(log_path).resolve()) in {str(Path(f).resolve()) for f in files}


def stage(func):
    """Log any exception of a stage, with its traceback, to the rule's log file before raising:
    once, appended after what the stage logged (never truncating the log)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        bound = inspect.signature(func).bind(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except Exception:
            log_path = bound.arguments.get("log_path")
            logger = logging.getLogger("nondet")
            if not _logs_to(logger, log_path):
                logger = get_logger(log_path, mode="a")
            logger.exception(f"{func.__name__} failed")
            raise

    return wrapper


def end_job() -> None:
    """The last line of every workflow script: its stage has returned, so its outputs are written
    and closed. Flush the logs and the standard streams and end the process with status 0 at
    once, without the interpreter's teardown of the modules it imported: in a job that imported
    torch that teardown (module objects, then the CUDA libraries' destructors) is 0.5-0.7 s of
    CPU, about a quarter of a small job. A stage that raises never gets here: its exception and
    exit status are Python's own."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def setup_torch(threads: int, device_name: str):
    """Threads and device of a torch job; with several local GPUs, a free one (nondet.workflow.gpus).
    torch is imported here, not at module level: the analysis stages use this module too."""
    # cuBLAS reads this when it creates its handle: set it before anything touches CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    from nondet.training.replica import resolve_device

    torch.set_num_threads(max(1, int(threads)))
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None and torch.cuda.device_count() > 1:
        from nondet.workflow.gpus import claim_gpu  # several local GPUs: take a free one, not always cuda:0

        device = torch.device("cuda", claim_gpu(torch.cuda.device_count()))
        torch.cuda.set_device(device)
    return device


def run_stage(snakemake, fn, *args, **kwargs):
    """The adapter every rule script shares: record the rule's ``code`` param as the code hash of
    its outputs (provenance), then call the stage ``fn`` with ``args``, each named output ``x`` of
    the rule as the keyword ``x_path``, each param whose name ``fn`` takes (``expect``,
    ``labels``, ``plugins``, ...) as that keyword, the rule's log as ``log_path``, and
    ``kwargs``. Without ``args``, the rule's input files, as one list, are the first argument
    (unless that parameter comes by name). Names ``fn`` does not take are not passed, so a rule
    and its stage agree by name: rule ``diversity_table``'s outputs ``csv`` and ``md`` are
    ``diversity_table(paths, csv_path=..., md_path=...)``; what ``args`` or ``kwargs`` give is
    not taken from the rule again."""
    from nondet.io.h5io import set_code_hash

    set_code_hash(snakemake.params.code)
    signature = inspect.signature(fn)
    named = {f"{name}_path": path for name, path in snakemake.output.items()}
    named.update(dict(snakemake.params.items()))
    if snakemake.log:
        named["log_path"] = snakemake.log[0]
    first = next(iter(signature.parameters))
    if not args and first not in kwargs and first not in named:
        args = (list(snakemake.input),)
    given = set(signature.bind_partial(*args).arguments) | set(kwargs)
    named = {k: v for k, v in named.items() if k in signature.parameters and k not in given}
    return fn(*args, **named, **kwargs)
