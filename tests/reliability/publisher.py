"""Publishes a model version again and again, for the crash tests: ``python -m tests.reliability.publisher
BUNDLE MODELS_DIR NAME COUNT [--hold-at-claim]``.

Loads the Keras model of BUNDLE, prints ``READY``, then for each of COUNT publishes prints
``PUBLISHING`` and, once ``trainer.export.publish`` returned, ``PUBLISHED <version>``. With
``--hold-at-claim`` it stops for good inside the first publish right after claiming the version number
(the empty version folder exists, the staged bundle is complete, the rename has not happened): it
prints ``CLAIMED <path>`` and sleeps, to be SIGKILLed there.
"""
from __future__ import annotations

import os
import sys
import time

from textgen.models_dir import STAGED_PREFIX
from trainer import export


def main() -> int:
    src, models_dir, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    model, meta = export.load_keras(src)
    if "--hold-at-claim" in sys.argv:
        real_rename = os.rename

        def rename(source, dest, *args, **kwargs):
            if os.path.basename(str(source)).startswith(STAGED_PREFIX) \
                    and os.path.basename(str(dest)).isdigit():
                print(f"CLAIMED {dest}", flush=True)
                time.sleep(3600)
            return real_rename(source, dest, *args, **kwargs)

        os.rename = rename
    print("READY", flush=True)
    for _ in range(count):
        print("PUBLISHING", flush=True)
        _path, version = export.publish(model, meta, models_dir, name)
        print(f"PUBLISHED {version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
