"""Following a training job from the command line: a progress bar on stderr, a line per epoch."""
from __future__ import annotations

import sys
import time

from client.api import Client
from textgen.v1 import textgen_pb2 as pb


def follow(client: Client, job_id: str) -> str:
    """Show a job's events (a progress bar on stderr, epoch lines on stdout) until it ends; returns
    its final state ("finished", "failed", "cancelled")."""
    progress = Progress(client.get_job(job_id).options.time_budget_minutes)
    try:
        for event in client.watch_job(job_id):
            outcome = progress.show(event)
            if outcome:
                return outcome
    finally:
        progress.close()
    return state_name(client.get_job(job_id).state)


class Progress:
    """One tqdm bar over all of a job's batches (epoch, loss, ETA) and a line per epoch; for a job
    with a time budget, a bar over its minutes (the budget, not the epochs, ends it)."""

    def __init__(self, budget_minutes: float = 0.0):
        self.bar = None
        self.epochs = self.batches = 0
        self.budget_s = budget_minutes * 60
        self.began = 0.0

    def show(self, event) -> str | None:
        kind = event.WhichOneof("event")
        e = getattr(event, kind)
        if kind == "queued":
            self._line("queued: waiting for a worker")
        elif kind == "started":
            self.epochs, self.batches = e.epochs, e.batches_per_epoch
            note = f", resuming after epoch {e.resumed_from_epoch}" if e.resumed_from_epoch else ""
            self._line(f"started (attempt {e.attempt}{note})")
            self._open(e.resumed_from_epoch * self.batches)
        elif kind == "batch":
            if self.bar is None:
                self.epochs, self.batches = self.epochs or 1, e.batches
                self._open((e.epoch - 1) * e.batches)
            self.bar.set_description_str(f"epoch {e.epoch}{self._of_epochs()}", refresh=False)
            self.bar.set_postfix_str(f"loss {e.loss:.4f}", refresh=False)
            if self.budget_s:
                self.bar.update(min(time.monotonic() - self.began, self.budget_s) - self.bar.n)
            else:
                self.bar.update((e.epoch - 1) * e.batches + e.batch - self.bar.n)
        elif kind == "epoch":
            val = f"{e.val_loss:.4f} ({e.bits_per_char:.3f} bits/char)" if e.val_loss else "n/a"
            self._line(f"epoch {e.epoch}{self._of_epochs()}: loss {e.loss:.4f}, validation loss {val}, "
                       f"{e.examples_per_second:,.0f} examples/s")
            for sample in e.samples:
                self._line(f"  [temperature {sample.temperature:g}] {sample.text!r}")
        elif kind == "checkpoint":
            pass
        elif kind == "finished":
            self.close()
            self._line(f"finished: model {e.model_name} version {e.model_version}")
            return "finished"
        elif kind == "failed":
            self.close()
            print(f"error: the job failed: {' '.join(e.reason.split())}", file=sys.stderr)
            return "failed"
        elif kind == "cancelled":
            self.close()
            self._line("cancelled: nothing was published")
            return "cancelled"
        return None

    def _of_epochs(self) -> str:
        return "" if self.budget_s else f"/{self.epochs}"

    def _open(self, done: int) -> None:
        from tqdm import tqdm

        self.close()
        if self.budget_s:  # seconds since the job started, against its budget
            self.began = time.monotonic()
            self.bar = tqdm(disable=None, total=self.budget_s, unit="s", file=sys.stderr, dynamic_ncols=True,
                            leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s {postfix}")
            return
        self.bar = tqdm(disable=None, total=max(self.epochs * self.batches, 1), initial=done, unit="batch", file=sys.stderr,
                        dynamic_ncols=True, leave=False, desc=f"epoch {done // max(self.batches, 1) + 1}/{self.epochs}")

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def state_name(value: int) -> str:
    return pb.JobState.Name(value).removeprefix("JOB_STATE_").lower()
