"""How `make test` shares the suite between pytest-xdist workers (``-n 3 --dist loadfile``).

A work unit is a test module: it runs whole, in order, in one worker, so its module-scoped fixtures (a
server, a Redis, a worker process, a trained model) are set up once. tests/web/ is one unit: its three
modules share one stack (tests/web/conftest.py). Units are handed out heaviest first, so that the
workers finish at about the same time instead of one running the last long module alone.
"""
from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

WEB = "tests/web"

# The heaviest units, heaviest first: seconds each took in `make test` on a quiet 2-core machine (two
# workers). A unit not named here runs after these, in collection order.
HEAVIEST_FIRST = [
    "tests/reliability/test_bad_input.py",  # ~70 s: 1000 generated requests per RPC
    "tests/test_jobs.py",  # ~60 s
    "tests/test_tfjs.py",  # ~60 s: tf.js under Node, a server, trainer processes
    WEB,  # ~60 s: a four-process stack, a browser, three training jobs
    "tests/test_worker_shutdown.py",  # ~55 s
    "tests/test_trainer.py",  # ~50 s
    "tests/test_keys.py",  # ~60 s: two replicas on one Redis, the keys command's processes
    "tests/test_penalties.py",  # ~45 s: a reference loop per penalty
    "tests/test_core.py",  # ~45 s
    "tests/reliability/test_faults.py",  # ~40 s
    "tests/test_stack.py",  # ~40 s
    "tests/reliability/test_load.py",  # ~30 s: 256 streams for 18 s
    "tests/test_trainer_cli.py",  # ~35 s
    "tests/test_resume.py",  # ~35 s: two server processes, one SIGKILLed
    "tests/test_server_grpc.py",  # ~35 s
    "tests/test_recipes.py",  # ~35 s
    "tests/test_server_engine.py",  # ~25 s
    "tests/reliability/test_publish_crash.py",  # ~20 s
    "tests/test_controls.py",  # ~20 s
    "tests/test_replicas.py",  # ~20 s
    "tests/test_finetune.py",  # ~30 s
    "tests/test_base_model.py",  # ~25 s
    "tests/test_score.py",  # ~15 s
    "tests/test_metrics.py",  # ~15 s
]


def unit_of(nodeid: str) -> str:
    """The work unit of a test: its module's path, or tests/web for the web package."""
    path = nodeid.split("::", 1)[0]
    return WEB if path.startswith(WEB + "/") else path


def heaviest_first(items: list) -> None:
    """Sort ``items`` (in place, stably) so that the units of HEAVIEST_FIRST come first, in its order."""
    rank = {unit: i for i, unit in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(unit_of(item.nodeid), len(rank)))


class ModuleScheduling(LoadScopeScheduling):
    """xdist's loadfile scheduling with tests/web/ as one unit, and units in the workers' collection
    order (already heaviest first), not reordered by their number of tests."""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)
